#!/usr/bin/python3
"""Bytes over the link for image updates and for deleted files (issue 5), from the link counters.

h1 -> h2 (h2 = h1 + an update layer; bench/corpus): with h1 already run on the node, the bytes
each path moves to run h2 (`python3 -c 'print(1)'`):
  oci           containerd: pull h1 + run, then pull h2 + run (layers shared by digest are kept)
  estargz       bench/estargz's proxy snapshotter, rpull + run each (when it is there)
  skiff         skiff run h1, then h2 converted with `--chunk-dict h1` (one node root, so one chunk cache)
  skiff, whole  the same, but each image read whole (`tar cf -` of a mount): the
                full-content analogue of a pull
addrmadd (ADD a 100 MB tar, rm it, ADD it again): image sizes and the bytes each path moves to
run `cat /payload.tar` in it.

Usage: dedup.py --profile 1gbit --out FILE.json
"""
import argparse, gzip, json, os, shlex, signal, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True  # no __pycache__ in the clone
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "coldstart"))
from harness import (SKIFF, BenchError, Containerd, Estargz, Link, Skiff, drop_caches, ensure_packages,  # noqa: E402
                     log, sh, timed, umount_under, ROOT)

H_CMD = ["python3", "-c", "print(1)"]
A_CMD = ["sh", "-c", "cat /payload.tar >/dev/null && echo read"]


class Dedup:
    def __init__(self, profile):
        self.profile = profile
        self.work = tempfile.mkdtemp(prefix="skiff-dedup.", dir="/var/tmp")
        self.link = Link(os.path.join(self.work, "registry"))
        self.stoppers = []
        self.seq = 0

    def ref(self, im, tag):
        return f"{self.reg}/corpus/{im}:{tag}"

    def prepare(self):
        layouts = {}
        for im in ("h1", "h2", "addrmadd"):
            layouts[im] = sh(["bash", os.path.join(ROOT, "bench/corpus/build.sh"), im], timeout=3600).split()[-1]
        self.layouts = layouts
        self.reg = self.link.up("1gbit")
        self.conv = Skiff(os.path.join(self.work, "convert-root"))
        self.facts = {}
        for im in ("h1", "h2", "addrmadd"):
            sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layouts[im]}:latest",
                f"docker://{self.ref(im, 'oci')}"])
            rep = json.loads(sh(self.conv.cmd("convert", "--json", self.ref(im, "oci"), self.ref(im, "skiff"))))
            m = json.loads(sh(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{self.ref(im, 'oci')}"]))
            self.facts[im] = {"oci_layers": [l["size"] for l in m["layers"]],
                              "oci_layer_digests": [l["digest"] for l in m["layers"]],
                              "skiff_blob_bytes": rep["images"][0]["blob_bytes"],
                              "skiff_metadata_layer_bytes": rep["images"][0]["metadata_layer_bytes"]}
        rep = json.loads(sh(self.conv.cmd("convert", "--json", "--chunk-dict", self.ref("h1", "skiff"),
                                          self.ref("h2", "oci"), self.ref("h2", "skiff-dict"))))
        im = rep["images"][0]
        self.facts["h2"].update(skiff_dict_new_blob_bytes=im["new_blob_bytes"],
                                skiff_dict_metadata_layer_bytes=im["metadata_layer_bytes"])
        # h2's new content: its layers that h1 lacks, gzip as shipped and as tar.
        new = [d for d in self.facts["h2"]["oci_layer_digests"] if d not in self.facts["h1"]["oci_layer_digests"]]
        gz = tar = 0
        for d in new:
            blob = os.path.join(layouts["h2"], "blobs", *d.split(":"))
            gz += os.path.getsize(blob)
            with gzip.open(blob) as f:
                while chunk := f.read(1 << 20):
                    tar += len(chunk)
        self.facts["h2"].update(new_layers=len(new), new_gzip_bytes=gz, new_tar_bytes=tar)
        self.estargz = Estargz()
        if self.estargz.available():
            try:
                for im in ("h1", "h2", "addrmadd"):
                    self.estargz.convert(self.ref(im, "oci"), self.ref(im, "esgz"))
            except BenchError as e:
                self.estargz.binary, self.estargz.reason = None, f"conversion failed: {e}"
        if not self.estargz.available():
            log(f"eStargz: not available ({self.estargz.reason})")

    def check(self, r, what):
        if r["rc"] != 0:
            raise BenchError(f"{what} failed (exit {r['rc']}): {r['output'][-300:]}")
        return r

    def containerd_pair(self, images, tag, cmd, snapshotter=None):
        """Pull + run each image in turn on one containerd; returns the link bytes of each step."""
        self.seq += 1
        proxy = None
        if snapshotter:
            self.estargz.start(os.path.join(self.work, f"esgz-{self.seq}"))
            self.stoppers.append(self.estargz.stop)
            proxy = {"stargz": self.estargz.sock}
        c = Containerd(os.path.join(self.work, f"ctrd-{self.seq}"), proxy=proxy)
        self.stoppers.append(c.stop)
        c.start()
        drop_caches()
        out = []
        for i, im in enumerate(images):
            pull = (c.ctr("image", "rpull", "--plain-http", self.ref(im, tag), binary="ctr-remote") if snapshotter
                    else c.ctr("image", "pull", "--plain-http", self.ref(im, tag)))
            run = c.ctr("run", "--rm", *(["--snapshotter", "stargz"] if snapshotter else []),
                        self.ref(im, tag), f"d{self.seq}-{i}", *cmd)
            both = ["sh", "-c", " ".join(map(shlex.quote, pull)) + ' >/dev/null && exec "$@"', "sh", *run]
            out.append(self.check(timed(both, self.link), f"{tag} {im}")["bytes"])
        c.stop()
        if snapshotter:
            self.estargz.stop()
        return out

    def skiff_pair(self, refs, cmd):
        self.seq += 1
        s = Skiff(os.path.join(self.work, f"skiff-{self.seq}"))
        self.stoppers.append(s.cleanup)
        drop_caches()
        out = [self.check(timed(s.cmd("run", "--rm", r, *cmd), self.link), r)["bytes"] for r in refs]
        s.cleanup()
        return out

    def skiff_whole(self, refs):
        """Each image mounted and read whole, in turn, through one node chunk cache."""
        self.seq += 1
        s = Skiff(os.path.join(self.work, f"skiff-{self.seq}"))
        self.stoppers.append(s.cleanup)
        drop_caches()
        out = []
        for i, r in enumerate(refs):
            mnt = os.path.join(s.root, f"mnt{i}")
            rx = self.link.counters()[0]
            sh(s.cmd("mount", "--daemon", r, mnt))
            # Through a pipe: GNU tar skips reading file data when its archive is /dev/null.
            sh(["sh", "-c", 'tar cf - -C "$1" . | cat >/dev/null', "sh", mnt], timeout=1800)
            out.append(self.link.counters()[0] - rx)
            sh(s.cmd("umount", mnt))
        s.cleanup()
        return out

    def run(self):
        self.prepare()
        self.link.shape(self.profile)
        res = {}
        esgz = self.estargz.available()
        log("h1 -> h2")
        res["oci"] = self.containerd_pair(["h1", "h2"], "oci", H_CMD)
        if esgz:
            res["estargz"] = self.containerd_pair(["h1", "h2"], "esgz", H_CMD, snapshotter=True)
        res["skiff"] = self.skiff_pair([self.ref("h1", "skiff"), self.ref("h2", "skiff-dict")], H_CMD)
        res["skiff-whole"] = self.skiff_whole([self.ref("h1", "skiff"), self.ref("h2", "skiff-dict")])
        res["skiff-whole-nodict"] = self.skiff_whole([self.ref("h1", "skiff"), self.ref("h2", "skiff")])
        log("addrmadd")
        res["addrmadd-oci"] = self.containerd_pair(["addrmadd"], "oci", A_CMD)[0]
        if esgz:
            res["addrmadd-estargz"] = self.containerd_pair(["addrmadd"], "esgz", A_CMD, snapshotter=True)[0]
        res["addrmadd-skiff"] = self.skiff_pair([self.ref("addrmadd", "skiff")], A_CMD)[0]
        res["addrmadd-skiff-whole"] = self.skiff_whole([self.ref("addrmadd", "skiff")])[0]
        return res

    def teardown(self):
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - keep tearing down
                pass
        self.link.down()
        umount_under(self.work)
        subprocess.run(["rm", "-rf", self.work])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="1gbit")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("dedup: must run as root")
    if not os.access(SKIFF, os.X_OK):
        sys.exit(f"dedup: no skiff binary at {SKIFF}; run `make release` (or set SKIFF_BIN)")
    ensure_packages(["containerd", "ctr", "runc", "skopeo", "umoci", "debootstrap", "docker-registry", "tc"])
    def on_signal(sig, _):
        raise KeyboardInterrupt(f"signal {sig}")
    # Explicit, as a shell that starts us in the background sets SIGINT to ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    d = Dedup(args.profile)
    try:
        res = d.run()
    finally:
        d.teardown()
    out = {"profile": args.profile, "facts": d.facts, "bytes": res,
           "estargz": None if d.estargz.available() else d.estargz.reason,
           "date": time.strftime("%Y-%m-%d", time.gmtime())}
    json.dump(out, open(args.out, "w"), indent=1)
    log(f"results in {args.out}")


if __name__ == "__main__":
    main()
