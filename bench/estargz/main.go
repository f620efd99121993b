// skiff-bench-estargz is the eStargz side of skiff's cold-start benchmark: a
// containerd proxy snapshotter that mounts eStargz layers lazily over FUSE.
//
// Debian ships the stargz-snapshotter library but not its daemon
// (containerd-stargz-grpc), so this is the smallest main that wires the
// library's fs (lazy FUSE layers) and snapshot (overlayfs snapshotter that
// asks fs for remote layers) packages to containerd's snapshots gRPC service.
// It keeps the library's defaults (prefetch landmarks, background fetch,
// on-disk cache) so the benchmark measures eStargz as users get it.
//
// Usage: skiff-bench-estargz --root DIR --address SOCK [--log-level L]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	"github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	"github.com/containerd/stargz-snapshotter/snapshot"
	rhttp "github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "/var/lib/skiff-bench-estargz", "state directory (layer cache, snapshots, pid file)")
	address := flag.String("address", "/run/skiff-bench-estargz.sock", "unix socket to serve containerd's snapshots API on")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	noBackground := flag.Bool("no-background-fetch", false, "do not fetch whole layers in the background (the library's default is to)")
	flag.Parse()

	lvl, err := logrus.ParseLevel(*level)
	if err != nil {
		fatal(err)
	}
	logrus.SetLevel(lvl)
	logrus.SetOutput(os.Stderr)
	ctx := context.Background()

	if err := run(ctx, *root, *address, *noBackground); err != nil {
		fatal(err)
	}
}

func run(ctx context.Context, root, address string, noBackground bool) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	// The benchmark reads peak memory (VmHWM) from /proc/PID/status; the pid
	// file saves it from having to track how the daemon was started.
	pidFile := filepath.Join(root, "pid")
	if err := os.WriteFile(pidFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	cfg := config.Config{
		NoBackgroundFetch: noBackground,
		// Nothing serves the metrics endpoint, so don't collect them.
		NoPrometheus: true,
	}
	fs, err := stargzfs.NewFilesystem(filepath.Join(root, "stargz"), cfg,
		// containerd (via ctr-remote rpull) passes the image ref and layer
		// digest as snapshot labels; resolve them against our registry hosts.
		stargzfs.WithGetSources(source.FromDefaultLabels(registryHosts)),
		// We run as root, so overlayfs opaque dirs use trusted.* xattrs.
		stargzfs.WithOverlayOpaqueType(layer.OverlayOpaqueTrusted))
	if err != nil {
		return fmt.Errorf("stargz filesystem: %w", err)
	}
	// AsynchronousRemove: removal of a snapshot returns at once and its
	// directory (and FUSE mount) goes at the next Cleanup, as upstream does.
	sn, err := snapshot.NewSnapshotter(ctx, filepath.Join(root, "snapshotter"), fs, snapshot.AsynchronousRemove)
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	// Close unmounts every FUSE layer (committed ones too) and closes the
	// metadata db, so a stopped daemon leaves no mounts behind.
	defer func() {
		if err := sn.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing snapshotter")
		}
		logPeakMemory(ctx)
	}()

	if err := os.MkdirAll(filepath.Dir(address), 0o755); err != nil {
		return err
	}
	// A socket left by a killed daemon would make Listen fail.
	if err := os.Remove(address); err != nil && !os.IsNotExist(err) {
		return err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.G(ctx).WithField("address", address).WithField("root", root).Info("serving snapshots API")

	select {
	case s := <-sig:
		log.G(ctx).WithField("signal", s).Info("shutting down")
		// Stop, not GracefulStop: a client stream left open by containerd
		// must not keep the daemon (and its mounts) alive.
		srv.Stop()
		return nil
	case err := <-errc:
		return err
	}
}

// registryClient carries every registry request. The fs library uses the
// client's Transport directly (a nil one panics) and tunes retries only on a
// retryablehttp transport, which is what the upstream daemon gives it.
var registryClient = func() *http.Client {
	c := rhttp.NewClient()
	c.Logger = nil // it would log every request
	return &http.Client{Transport: &rhttp.RoundTripper{Client: c}}
}()

// registryHosts resolves a registry host name to its endpoint. Loopback and
// private-network registries (the benchmark's is 10.203.0.2:5000, tests use
// 127.0.0.1:PORT) are reached over plain HTTP; others over HTTPS. Anonymous
// token auth is enough: the benchmark registry has none.
func registryHosts(ref reference.Spec) ([]docker.RegistryHost, error) {
	return docker.ConfigureDefaultRegistries(
		docker.WithClient(registryClient),
		docker.WithPlainHTTP(isPlainHTTP),
		docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthClient(registryClient))),
	)(ref.Hostname())
}

func isPlainHTTP(host string) (bool, error) {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.IsLoopback() || ip.IsPrivate()), nil
}

// logPeakMemory logs VmHWM, the daemon's peak resident memory, at exit.
func logPeakMemory(ctx context.Context) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			log.G(ctx).Info("peak memory " + strings.Join(strings.Fields(line)[1:], " "))
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "skiff-bench-estargz:", err)
	os.Exit(1)
}
