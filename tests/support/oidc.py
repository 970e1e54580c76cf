"""A real OpenID Connect provider for the sign-in tests: panva/oidc-provider run by node.

``tests/oidc`` holds its package.json, lock file and a small provider script; the first run
installs node_modules there (``npm ci``), so a clean clone needs only node and the npm registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.support.processes import ServiceProcess
from tests.support.stack import free_port

HERE = Path(__file__).resolve().parents[1] / "oidc"
CLIENT_ID = "fama-pages"
CLIENT_SECRET = "fama-test-client-secret-0123456789-abcdefghijkl"


def ensure_installed() -> None:
    if (HERE / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("The sign-in tests need node (20.19 or later) and npm to run oidc-provider")
    command = "ci" if (HERE / "package-lock.json").exists() else "install"
    subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=600)


class OidcProvider:
    """One provider process: its issuer URL, its signing key (for tests that forge with it) and its accounts."""

    def __init__(self, *, accounts: dict[str, dict], redirect_uris: list[str], post_logout_redirect_uris: list[str]):
        ensure_installed()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key))
        self.kid = "fama-test-key"
        jwk.pop("key_ops", None)  # the provider publishes the public half; "sign" alone would forbid verifying
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        config = {
            "issuer": self.issuer,
            "port": self.port,
            "jwks": {"keys": [jwk]},
            "accounts": accounts,
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": redirect_uris,
                "post_logout_redirect_uris": post_logout_redirect_uris,
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }],
        }
        self.config_path = Path(tempfile.mkdtemp(prefix="fama-oidc-")) / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.process = ServiceProcess("oidc-provider", [shutil.which("node") or "node", str(HERE / "provider.mjs"),
                                                        str(self.config_path)], ready_text="oidc-provider ready")

    def start(self) -> OidcProvider:
        self.process.start(timeout=60)
        return self

    def stop(self) -> None:
        self.process.stop()

    def settings_env(self) -> dict[str, str]:
        """What a FAMA service needs to sign its staff in here, and to check this provider's bearer tokens."""
        return {
            "OIDC_ISSUER": self.issuer,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_PROVIDER_NAME": "Test Health Trust",
            "JWT_JWKS_URL": f"{self.issuer}/jwks",
            "JWT_ISSUER": self.issuer,
            "JWT_AUDIENCE": CLIENT_ID,
        }
