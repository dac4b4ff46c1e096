"""A real Dovecot IMAP server for the tests, on a free loopback port, in its own temp dir.

It never reads /etc/dovecot. Any user name logs in with the shared test password and gets an
empty Maildir, so each test uses a fresh mailbox on one server. As root, mail is stored as
nobody:nogroup (Dovecot refuses uid 0), and the dirs live under /tmp with mode 755 so that
user can reach them.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "secret"


def find_dovecot() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").is_file() else None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DovecotServer:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    host = "127.0.0.1"

    def url(self, user: str, folder: str = "INBOX") -> str:
        return f"imap://{user}:{PASSWORD}@{self.host}:{self.port}/{folder}"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_dovecot(binary: str) -> DovecotServer:
    root = Path(tempfile.mkdtemp(prefix="keepdesk-dovecot-"))
    root.chmod(0o755)
    port = _free_port()
    if os.geteuid() == 0:
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        users = f"first_valid_uid = {uid}\nfirst_valid_gid = {gid}\n"
        userdb = f"uid=nobody gid=nogroup home={root}/mail/%d/%n"
        rootless = ""
    else:
        uid, gid = os.geteuid(), os.getegid()
        me, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
        users = (
            f"first_valid_uid = {uid}\nfirst_valid_gid = {gid}\n"
            f"default_internal_user = {me}\ndefault_login_user = {me}\n"
            f"default_internal_group = {group}\n"
        )
        userdb = f"uid={uid} gid={gid} home={root}/mail/%d/%n"
        rootless = "service anvil {\n  chroot =\n}\n"
    (root / "mail").mkdir()
    if os.geteuid() == 0:
        os.chown(root / "mail", uid, gid)
    config = f"""
instance_name = keepdesk-test-{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0 secs
mail_location = maildir:~/Maildir
mailbox_idle_check_interval = 1 secs
{users}
{rootless}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  {"chroot =" if os.geteuid() != 0 else ""}
}}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = {userdb}
}}
"""
    (root / "dovecot.conf").write_text(config)
    with (root / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            [binary, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dovecot exited: {(root / 'stderr.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"* OK"):
                    return DovecotServer(root=root, port=port, process=process)
        except OSError:
            time.sleep(0.02)  # a connect poll, bounded by the deadline
    process.kill()
    raise RuntimeError("dovecot did not start within 10 s")
