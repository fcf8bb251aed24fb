"""A small Docker token issuer (the `realm` of `WWW-Authenticate: Bearer`), enough for CNCF distribution's
`auth: token` to accept its JWTs: ES256, header `x5c: [base64 DER cert]` of a self-signed test certificate that
is the registry's `rootcertbundle`; claims iss, aud (= service), exp, nbf, iat, jti and `access` for the
requested scopes.

distribution 2.8 accepts tokens up to 60 s past `exp` (clock-skew leeway). With `registry_leeway_s=60` the
issuer back-dates `exp` by that much, so a token announced as `expires_in: 2` is also refused by the registry
two seconds later: a client that keeps using it gets a 401 and must fetch a new one.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .net import LocalHTTPService


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer(LocalHTTPService):
    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, allow_anonymous: bool = True,
                 expires_in: int = 300, registry_leeway_s: int = 0, issuer: str = "mcvfs-test-issuer"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.allow_anonymous = allow_anonymous
        self.expires_in = expires_in
        self.registry_leeway_s = registry_leeway_s
        self.issuer = issuer
        self.cert_path = self.workdir / "token-cert.pem"
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcvfs test token issuer")])
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()
        self.issued: list[dict] = []   # one entry per token handed out: {"account", "scopes"}
        self.refused: list[dict] = []  # requests answered 401

    # -- JWT -----------------------------------------------------------------------------------------------

    def sign(self, claims: dict) -> str:
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _token_for(self, service: str, scopes: list[str], account: str | None) -> dict:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if account is None:
                actions = [a for a in actions if a == "pull"]
            access.append({"type": kind, "name": name, "actions": actions})
        now = int(dt.datetime.now(dt.timezone.utc).timestamp())
        claims = {"iss": self.issuer, "sub": account or "", "aud": service,
                  "exp": now + self.expires_in - self.registry_leeway_s, "nbf": now - 1, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        token = self.sign(claims)
        issued_at = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued_at}

    # -- HTTP ----------------------------------------------------------------------------------------------

    def _handler(issuer_self):  # noqa: N805 - closes over the issuer
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                if url.path != "/token":
                    self.send_error(404)
                    return
                query = parse_qs(url.query)
                service = query.get("service", [""])[0]
                scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
                account = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    try:
                        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    except Exception:
                        user, password = "", None
                    if issuer_self.users.get(user) != password:
                        return self._refuse(f"bad credentials for {user!r}", scopes)
                    account = user
                elif not issuer_self.allow_anonymous:
                    return self._refuse("credentials required", scopes)
                body = issuer_self._token_for(service, scopes, account)
                with issuer_self._lock:
                    issuer_self.issued.append({"account": account, "scopes": scopes})
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _refuse(self, why: str, scopes: list[str]):
                with issuer_self._lock:
                    issuer_self.refused.append({"why": why, "scopes": scopes})
                data = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": why}]}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("WWW-Authenticate", 'Basic realm="mcvfs-test-issuer"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        return Handler

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def issued_count(self) -> int:
        with self._lock:
            return len(self.issued)
