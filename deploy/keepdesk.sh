#!/bin/sh
# The `keepdesk` command for a systemd install: runs /opt/keepdesk/venv/bin/keepdesk as the
# keepdesk user with the settings keepdesk.service uses, so that `keepdesk upgrade`, `keepdesk
# backup` or `keepdesk user create` act on the instance the service runs, and never leave files
# owned by root in its data directory. Install it as /usr/local/bin/keepdesk (docs/operations.md).
set -eu

if [ -r /etc/keepdesk/keepdesk.env ]; then
	set -a
	# shellcheck source=/dev/null
	. /etc/keepdesk/keepdesk.env
	set +a
fi
KEEPDESK_CONFIG=${KEEPDESK_CONFIG:-/etc/keepdesk/config.toml}
KEEPDESK_DATA_DIR=${KEEPDESK_DATA_DIR:-/var/lib/keepdesk}
export KEEPDESK_CONFIG KEEPDESK_DATA_DIR

# Relative paths given on the command line (backup --output, restore PATH) stay relative to
# where the command was typed; keepdesk's own files are under the absolute data directory.
if [ "$(id -u)" = 0 ]; then
	exec runuser -u keepdesk -- /opt/keepdesk/venv/bin/keepdesk "$@"
fi
if [ "$(id -un)" != keepdesk ]; then
	echo "keepdesk: run this as root or as the keepdesk user" >&2
	exit 1
fi
exec /opt/keepdesk/venv/bin/keepdesk "$@"
