#!/usr/bin/python3
"""A minimal Docker registry token server for skiff's tests.

Issues RS256 JWTs that docker-registry's `auth: token` accepts (the signing
certificate travels in the x5c header and is the registry's rootcertbundle).
Basic credentials must match USER:PASSWORD. Tokens are valid for LIFETIME
seconds (the registry adds 60 s of leeway, which is subtracted here so short
lifetimes really expire). Each issued token is logged to LOG, one per line.

Usage: token_server.py CERT_OUT LOG USER PASSWORD LIFETIME
Prints the port it listens on.
"""
import base64, datetime, http.server, json, os, socketserver, sys, time, urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

cert_out, log_path, user, password, lifetime = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skiff-test-token")])
now = datetime.datetime.utcnow()
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
with open(cert_out, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        auth = self.headers.get("Authorization", "")
        ok = auth.startswith("Basic ") and base64.b64decode(auth[6:]).decode() == f"{user}:{password}"
        if not ok:
            self.send_response(401)
            self.end_headers()
            return
        access = []
        for scope in q.get("scope", []):
            for s in scope.split(" "):
                kind, repo, actions = s.split(":")[0], ":".join(s.split(":")[1:-1]), s.split(":")[-1]
                access.append({"type": kind, "name": repo, "actions": actions.split(",")})
        t = int(time.time())
        claims = {"iss": "skiff-test", "sub": user, "aud": q.get("service", [""])[0],
                  "exp": t + lifetime - 60, "nbf": t - 70, "iat": t - 70,
                  "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = signing + "." + b64(sig)
        with open(log_path, "a") as f:
            f.write(json.dumps(access) + "\n")
        body = json.dumps({"token": token, "access_token": token, "expires_in": lifetime}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
