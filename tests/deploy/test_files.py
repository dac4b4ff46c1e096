"""The deployment files agree with each other and with keepdesk: the systemd units pass
`systemd-analyze verify`, the nginx example passes `nginx -t`, and the image, the compose file
and the entrypoint name the same entrypoint, port, data path and health check.

No container engine runs here, so the image is never built by the tests; these are text checks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import processes

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINERFILE = (DEPLOY / "Containerfile").read_text()
COMPOSE = (DEPLOY / "compose.yaml").read_text()
ENTRYPOINT = (DEPLOY / "entrypoint.sh").read_text()
UNITS = ["keepdesk.service", "keepdesk-worker.service"]
DATA = "/var/lib/keepdesk"
INSTALLED = "/opt/keepdesk/venv/bin/keepdesk"


def _uncommented(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


# --- systemd ----------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart exists: point it at this venv's keepdesk instead.
    text = (DEPLOY / unit).read_text()
    assert INSTALLED in text
    (tmp_path / unit).write_text(text.replace(INSTALLED, str(processes.KEEPDESK)))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and bad values are only warnings for systemd: any line about the unit fails.
    about_it = [line for line in result.stderr.splitlines() if unit in line]
    assert result.returncode == 0 and not about_it, result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_runs_keepdesk_unprivileged_and_confined(unit: str) -> None:
    settings = dict(
        line.split("=", 1)
        for line in _uncommented((DEPLOY / unit).read_text()).splitlines()
        if "=" in line
    )
    assert settings["User"] == "keepdesk"
    assert settings["CapabilityBoundingSet"] == ""
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "SystemCallFilter": "@system-service",
        "Restart": "on-failure",
        "ReadWritePaths": DATA,
        "Environment": f"KEEPDESK_DATA_DIR={DATA}",
    }.items():
        assert f"\n{key}={value}\n" in "\n" + (DEPLOY / unit).read_text(), f"{key}={value}"
    assert "RestrictAddressFamilies" in settings
    assert "MemoryMax" in settings
    # Upgrading is a step a person takes (see the unit's header), never a restart's side effect.
    assert "ExecStartPre" not in settings


# --- nginx ------------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "help.example.org")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_the_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed")
    cert, key = _self_signed(tmp_path)
    site = (DEPLOY / "nginx.conf").read_text()
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", site)
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  include {tmp_path}/site.conf;\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_nginx_example_streams_events_and_takes_attachments() -> None:
    site = _uncommented((DEPLOY / "nginx.conf").read_text())
    events = re.search(r"location ~ /events\$ \{(.*?)\}", site, re.DOTALL)
    assert events is not None
    assert "proxy_buffering off;" in events.group(1)
    assert re.search(r"proxy_read_timeout (\d+)h;", events.group(1))
    # add_header inside a location would drop the server's HSTS header there.
    assert "add_header" not in events.group(1)
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in site
    assert "proxy_hide_header Strict-Transport-Security;" in site  # not two of them
    size = re.search(r"client_max_body_size (\d+)m;", site)
    assert size is not None and int(size.group(1)) * 1024 * 1024 > 25 * 1024 * 1024
    assert "listen 443 ssl" in site
    assert "server 127.0.0.1:8000;" in site


# --- the image, the compose file and the entrypoint -------------------------------------------


def test_image_compose_and_entrypoint_agree() -> None:
    image = _uncommented(CONTAINERFILE)
    compose = _uncommented(COMPOSE)

    # The entrypoint: copied to the path the image names.
    assert re.search(
        r"^COPY .*deploy/entrypoint\.sh /usr/local/bin/keepdesk-entrypoint$", image, re.M
    )
    assert 'ENTRYPOINT ["/usr/local/bin/keepdesk-entrypoint"]' in image

    # The port: exposed, published, probed.
    assert re.search(r"^EXPOSE 8000$", image, re.M)
    assert '"127.0.0.1:8000:8000"' in compose
    assert "http://127.0.0.1:8000/healthz" in image

    # The data: one path for the image's volume, its KEEPDESK_DATA_DIR, compose's volume and
    # the entrypoint's default.
    assert f'VOLUME ["{DATA}"]' in image
    assert f"KEEPDESK_DATA_DIR={DATA}" in image
    assert f"- data:{DATA}" in compose
    assert f': "${{KEEPDESK_DATA_DIR:={DATA}}}"' in ENTRYPOINT

    # Not root: the image's user, the one the entrypoint's message names.
    assert re.search(r"^USER 10001:10001$", image, re.M)
    assert "--uid 10001" in image
    assert "uid 10001" in ENTRYPOINT

    # compose builds this Containerfile, from the repository's root.
    assert "context: .." in compose
    assert "dockerfile: deploy/Containerfile" in compose


def test_compose_passes_secrets_as_files_only() -> None:
    compose = _uncommented(COMPOSE)
    assert "image: docker.io/library/postgres:15" in compose
    assert "pg_isready" in compose
    assert "condition: service_healthy" in compose
    # Every *_FILE setting names a secret the service mounts, and no password is inline.
    for name in re.findall(r"_FILE: /run/secrets/(\w+)", compose):
        assert re.search(rf"^  {name}:\n    file: \./secrets/{name}$", compose, re.M), name
    assert not re.search(r"PASSWORD:|SECRET_KEY:", compose)
    assert "postgresql://keepdesk@db:5432/keepdesk" in compose  # no password in the URL
    # The variables compose sets are the ones the entrypoint reads.
    for variable in re.findall(
        r"^\s+(KEEPDESK_(?:ADMIN|DB)_\w+|KEEPDESK_\w+_FILE):", compose, re.M
    ):
        assert variable in ENTRYPOINT or variable.endswith("_FILE"), variable
