"""A throw-away Dovecot IMAP server on 127.0.0.1 for tests: the real server, not a mock.

    from tests.imap_server import dovecot  # the session-scoped fixture

    def test_x(dovecot):
        box = dovecot.mailbox()          # a fresh user, so a fresh Maildir
        box.append(b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        settings = load_settings(**box.settings())

Static passdb (any user name, one password), Maildir in a temp folder. `port` speaks plain IMAP
(and offers STARTTLS), `tls_port` implicit TLS, both with a self-signed certificate for 127.0.0.1
whose file is `cert_file` (point SSL_CERT_FILE at it to trust it).
Run as root (CI), Dovecot refuses to run its login and mail processes as root, so they run as its
own unprivileged users (`dovenull`, `dovecot`) and the temp folder is theirs; run as anyone else,
everything runs as that user. Tests are skipped, with the reason, when Dovecot is not installed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

PASSWORD = "test-password"
DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)

_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = yes
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = 1
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={base}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
  # No login delay after a failed login (the wrong-password tests), as Dovecot's docs describe.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _self_signed(cert_file: Path, key_file: Path) -> None:
    """A certificate for IP 127.0.0.1, valid for a day (cryptography comes with moto)."""
    import ipaddress
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def _users() -> dict[str, str]:
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return dict(internal=me, internal_group=me, login=me, mail_user=me, mail_group=me)
    return dict(internal="dovecot", internal_group="dovecot", login="dovenull", mail_user="dovecot", mail_group="dovecot")


class Mailbox:
    """One user's mailbox on the test server."""

    def __init__(self, server: DovecotServer, user: str) -> None:
        self.server, self.user = server, user

    def client(self):
        from imapclient import IMAPClient

        client = IMAPClient("127.0.0.1", port=self.server.port, ssl=False, timeout=30)
        client.login(self.user, PASSWORD)
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        client = self.client()
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for message in messages:
                client.append(folder, message)
        finally:
            client.logout()

    def recreate(self, folder: str) -> None:
        """Delete and create `folder`: Dovecot gives it a new UIDVALIDITY (RFC 3501 §2.3.1.1)."""
        client = self.client()
        try:
            client.delete_folder(folder)
            client.create_folder(folder)
        finally:
            client.logout()

    def flags(self, folder: str = "INBOX") -> dict[int, tuple]:
        client = self.client()
        try:
            client.select_folder(folder, readonly=True)
            return {uid: data[b"FLAGS"] for uid, data in client.fetch(client.search("ALL"), ["FLAGS"]).items()}
        finally:
            client.logout()

    def settings(self, folder: str = "INBOX") -> dict:
        """load_settings() overrides that point the tool at this mailbox."""
        return dict(imap_host="127.0.0.1", imap_port=self.server.port, imap_username=self.user,
                    imap_password=PASSWORD, imap_folder=folder, imap_ssl=False, imap_starttls=False)


class DovecotServer:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ea-dovecot-"))
        self.port, self.tls_port = _free_port(), _free_port()
        self.cert_file = self.base / "cert.pem"
        self.process: subprocess.Popen | None = None

    def start(self) -> DovecotServer:
        users = _users()
        self.base.chmod(0o755)  # the unprivileged mail and login processes must reach it
        (self.base / "home").mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.base / "home", users["mail_user"], users["mail_group"])
        _self_signed(self.cert_file, self.base / "key.pem")
        config = self.base / "dovecot.conf"
        config.write_text(_CONFIG.format(base=self.base, port=self.port, tls_port=self.tls_port, password=PASSWORD,
                                         **users))
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # waiting for a real server to listen, not a test sleep
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def mailbox(self) -> Mailbox:
        """A new user: its own empty Maildir, so tests never see each other's mail."""
        return Mailbox(self, f"user-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def dovecot():
    if DOVECOT is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd): IMAP tests skipped")
    try:
        import imapclient  # noqa: F401
    except ImportError:
        pytest.skip("imapclient is not installed: IMAP tests skipped")
    server = DovecotServer().start()
    yield server
    server.stop()
