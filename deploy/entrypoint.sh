#!/usr/bin/env bash
# keepdesk's container entrypoint: everything the image does before keepdesk runs lives here, so
# the tests can run it on a machine without a container engine (tests/deploy/test_entrypoint.py).
#
#   keepdesk-entrypoint [SERVE-OPTIONS...]   prepare, then exec `keepdesk serve --host 0.0.0.0 ...`
#   keepdesk-entrypoint --check-only         prepare, then exit 0 (a one-off migration job; tests)
#   keepdesk-entrypoint COMMAND [ARGS...]    wait for the database, then exec `keepdesk COMMAND`
#                                            (worker, backup, restore, user, ...): no upgrade
#
# Preparing is, in order:
#   1. refuse to run as root (KEEPDESK_ALLOW_ROOT=1 overrides, for tests only);
#   2. read secrets from files: KEEPDESK_<NAME>_FILE sets KEEPDESK_<NAME> from that file, and
#      KEEPDESK_DATABASE_PASSWORD_FILE puts its password into KEEPDESK_DATABASE_URL;
#   3. check the data directory (KEEPDESK_DATA_DIR, /var/lib/keepdesk) is writable, and keep
#      scratch files there (TMPDIR, unless set): a restore drill unpacks a whole backup;
#   4. wait for PostgreSQL, about KEEPDESK_DB_WAIT_SECONDS (60) at most, then fail saying why;
#   5. `keepdesk upgrade` (a verified backup first, then the migrations); after a failed
#      migration it refuses to start again until a person has looked (upgrade-failed in the
#      data directory says what happened);
#   6. when there is no administrator at all and KEEPDESK_ADMIN_EMAIL is set, create one with
#      the password in KEEPDESK_ADMIN_PASSWORD_FILE (name: KEEPDESK_ADMIN_NAME, "Administrator").
set -euo pipefail

say() { printf 'keepdesk-entrypoint: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

: "${KEEPDESK_DATA_DIR:=/var/lib/keepdesk}"
export KEEPDESK_DATA_DIR

refuse_root() {
	if [ "$(id -u)" = 0 ] && [ "${KEEPDESK_ALLOW_ROOT:-}" != 1 ]; then
		die "refusing to run as root: run as the image's keepdesk user (uid 10001), not with '--user 0' or 'user: root'"
	fi
}

# KEEPDESK_SECRET_KEY_FILE=/run/secrets/secret_key -> KEEPDESK_SECRET_KEY=<its first line>.
read_secret_files() {
	local var name path
	for var in $(compgen -e); do
		case $var in
		KEEPDESK_*_FILE) ;;
		*) continue ;;
		esac
		case $var in
		KEEPDESK_ADMIN_PASSWORD_FILE | KEEPDESK_DATABASE_PASSWORD_FILE) continue ;;
		esac
		name=${var%_FILE}
		path=${!var}
		if [ -n "${!name:-}" ]; then
			die "both $name and $var are set: keep one"
		fi
		[ -r "$path" ] || die "$var: cannot read $path"
		IFS= read -r "${name?}" <"$path" || [ -n "${!name:-}" ] || die "$var: $path is empty"
		export "${name?}"
		unset "$var"
	done
	if [ -n "${KEEPDESK_DATABASE_PASSWORD_FILE:-}" ]; then
		[ -r "$KEEPDESK_DATABASE_PASSWORD_FILE" ] ||
			die "KEEPDESK_DATABASE_PASSWORD_FILE: cannot read $KEEPDESK_DATABASE_PASSWORD_FILE"
		[ -n "${KEEPDESK_DATABASE_URL:-}" ] ||
			die "KEEPDESK_DATABASE_PASSWORD_FILE is set but KEEPDESK_DATABASE_URL is not"
		# The password goes into the URL percent-encoded, so any character is safe in it.
		KEEPDESK_DATABASE_URL=$(python3 - "$KEEPDESK_DATABASE_URL" "$KEEPDESK_DATABASE_PASSWORD_FILE" <<'EOF'
import sys
from urllib.parse import quote, urlsplit, urlunsplit

url, path = urlsplit(sys.argv[1]), sys.argv[2]
with open(path, encoding="utf-8") as f:
    password = f.readline().rstrip("\r\n")
if not password:
    sys.exit(f"keepdesk-entrypoint: error: {path} is empty")
if url.password is not None:
    sys.exit("keepdesk-entrypoint: error: KEEPDESK_DATABASE_URL has a password already")
user, _, host = url.netloc.rpartition("@")
if not user:
    sys.exit("keepdesk-entrypoint: error: KEEPDESK_DATABASE_URL names no user (user@host)")
print(urlunsplit(url._replace(netloc=f"{user}:{quote(password, safe='')}@{host}")))
EOF
) || exit 1
		export KEEPDESK_DATABASE_URL
		unset KEEPDESK_DATABASE_PASSWORD_FILE
	fi
}

check_data_dir() {
	mkdir -p "$KEEPDESK_DATA_DIR" 2>/dev/null || true
	if [ ! -d "$KEEPDESK_DATA_DIR" ] || [ ! -w "$KEEPDESK_DATA_DIR" ]; then
		die "the data directory $KEEPDESK_DATA_DIR is not writable by uid $(id -u): give the volume to that user (chown -R $(id -u):$(id -g))"
	fi
	if [ -z "${TMPDIR:-}" ]; then
		TMPDIR=$KEEPDESK_DATA_DIR/tmp
		mkdir -p "$TMPDIR"
		export TMPDIR
	fi
}

# `keepdesk check` prints "ok    database <url> is reachable" or "FAIL  database <url>: <why>".
wait_for_database() {
	case ${KEEPDESK_DATABASE_URL:-sqlite} in
	postgres*) ;;
	*) return 0 ;; # SQLite: a file in the data directory, nothing to wait for
	esac
	local wait=${KEEPDESK_DB_WAIT_SECONDS:-60} now deadline attempt rc out line
	case $wait in '' | *[!0-9]*) die "KEEPDESK_DB_WAIT_SECONDS must be a whole number of seconds" ;; esac
	now=$(date +%s)
	deadline=$((now + wait))
	while :; do
		# However the network misbehaves, one attempt ends within 15 s (and gets at least 5,
		# as keepdesk takes a few seconds to start), so the wait ends near its deadline.
		attempt=$((deadline - now))
		[ "$attempt" -le 15 ] || attempt=15
		[ "$attempt" -ge 5 ] || attempt=5
		rc=0
		out=$(timeout --kill-after=2 "$attempt" keepdesk check 2>&1) || rc=$?
		if grep -qE '^ok +database ' <<<"$out"; then
			return 0
		fi
		line=$(grep -E '^FAIL +database ' <<<"$out" | head -n 1 | sed -E 's/^FAIL +//' || true)
		if [ -z "$line" ]; then
			case $rc in
			124 | 137) line="no answer within ${attempt}s" ;;
			*) line=$(tail -n 1 <<<"$out") ;;
			esac
		fi
		now=$(date +%s)
		if [ "$now" -ge "$deadline" ]; then
			die "the database did not answer within ${wait}s (KEEPDESK_DB_WAIT_SECONDS): ${line:-no answer}"
		fi
		say "waiting for the database: ${line:-no answer}"
		sleep 1 # polling, bounded by the deadline above
	done
}

upgrade() {
	local marker=$KEEPDESK_DATA_DIR/upgrade-failed out
	if [ -e "$marker" ]; then
		die "a previous 'keepdesk upgrade' failed; it said: $(cat "$marker"). Fix the cause or restore the backup it names, then delete $marker"
	fi
	if ! out=$(keepdesk upgrade 2>&1); then
		printf '%s\n' "$out" >&2
		if grep -q 'migration failed' <<<"$out"; then
			# A failed backup left the data as it was, and retrying it later is harmless; a
			# failed migration needs a person before anything runs on that database again.
			printf '%s\n' "$out" >"$marker"
			die "'keepdesk upgrade' failed; kept in $marker so that a restart does not retry it"
		fi
		die "'keepdesk upgrade' failed"
	fi
	printf '%s\n' "$out" >&2
}

check_admin_settings() {
	[ -n "${KEEPDESK_ADMIN_EMAIL:-}" ] || return 0
	local password_file=${KEEPDESK_ADMIN_PASSWORD_FILE:-}
	[ -n "$password_file" ] || die "KEEPDESK_ADMIN_EMAIL is set but KEEPDESK_ADMIN_PASSWORD_FILE is not"
	[ -r "$password_file" ] || die "KEEPDESK_ADMIN_PASSWORD_FILE: cannot read $password_file"
}

has_admin() {
	keepdesk user list | awk '$3 == "admin" { found = 1 } END { exit !found }'
}

# Only while there is no administrator at all: once there is one, a changed or removed first
# admin must never come back with the password from the environment.
first_admin() {
	# Without an address, `keepdesk serve` itself logs how to create the first administrator.
	[ -n "${KEEPDESK_ADMIN_EMAIL:-}" ] || return 0
	has_admin && return 0
	if keepdesk user create "$KEEPDESK_ADMIN_EMAIL" --name "${KEEPDESK_ADMIN_NAME:-Administrator}" \
		--role admin --password-stdin <"$KEEPDESK_ADMIN_PASSWORD_FILE" >&2; then
		return 0
	fi
	# Two replicas starting at once: the other one made it.
	has_admin || die "could not create the first administrator $KEEPDESK_ADMIN_EMAIL"
}

refuse_root
read_secret_files
check_admin_settings
check_data_dir

case ${1:-} in
--check-only)
	wait_for_database
	upgrade
	first_admin
	say "ready (--check-only: not starting keepdesk serve)"
	exit 0
	;;
'' | -*)
	wait_for_database
	upgrade
	first_admin
	exec keepdesk serve --host 0.0.0.0 "$@"
	;;
*)
	wait_for_database
	exec keepdesk "$@"
	;;
esac
