#!/usr/bin/env bash
# Regenerates the real PostgreSQL 15 WAL files under testdata/ (Debian's
# postgresql-15, run as root: the server runs as user postgres). Not run by
# the tests. A new run gives new system identifiers, LSNs and timestamps: the
# tests pin the values of the committed files, so update them together.
#
#   usage: mkfixtures.sh OUTDIR
set -euo pipefail
OUT=$(realpath -m "$1")
BIN=${PGBIN:-/usr/lib/postgresql/15/bin}
run() { runuser -u postgres -- "$@"; }

# cluster DIR SEGSIZE_MB: initdb and start a cluster that archives to DIR/arch.
cluster() {
	local w=$1
	run mkdir -p "$w/data" "$w/arch" "$w/sock"
	run "$BIN/initdb" -A trust -N --wal-segsize="$2" -D "$w/data" >/dev/null
	cat >>"$w/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$w/sock'
archive_mode = on
archive_command = 'cp %p $w/arch/%f'
restore_command = 'cp $w/arch/%f %p'
fsync = off
CONF
	run "$BIN/pg_ctl" -D "$w/data" -l "$w/log" -w start >/dev/null
}
sql() { run "$BIN/psql" -h "$1/sock" -d postgres -Atq "${@:2}"; }
stop() { run "$BIN/pg_ctl" -D "$1" -w stop >/dev/null; }
# promote_by_recovery: archive recovery to the end of WAL ends on a new timeline.
promote_by_recovery() {
	run touch "$1/data/recovery.signal"
	run "$BIN/pg_ctl" -D "$1/data" -l "$1/log" -w start >/dev/null
}

# Some WAL, a WAL switch, a base backup (backup history file), then a new
# timeline: a .partial of the old timeline's last segment and the new
# timeline's copy of it. pg15-1mib uses 1 MiB segments, pg15-16mib 16 MiB.
switches() {
	local w=$1
	cluster "$w" "$2"
	sql "$w" -c "create table t(i int); insert into t select generate_series(1,1000)"
	sql "$w" -c "select pg_switch_wal()" >/dev/null
	sql "$w" -c "insert into t select generate_series(1,1000)"
	sql "$w" >/dev/null <<SQL
select pg_backup_start('fixture', true);
insert into t values (1);
select pg_switch_wal();
select * from pg_backup_stop();
SQL
	sql "$w" -c "insert into t values (2)"
	stop "$w/data"
	promote_by_recovery "$w"
	sql "$w" -c "insert into t values (3)"
	sql "$w" -c "select pg_switch_wal()" >/dev/null
	sleep 1
	stop "$w/data"
}

# pg15-timeline3: timeline 2 forks at X; then a base backup taken before X
# is recovered towards timeline 2 but stopped at Y < X, which writes a
# 00000003.history whose second switch point is below its first.
timeline3() {
	local w=$1
	cluster "$w" 16
	run "$BIN/pg_basebackup" -h "$w/sock" -D "$w/bb" -X none
	cp "$w/bb/global/pg_control" "$w/pg_control.basebackup"
	run "$BIN/pgbench" -h "$w/sock" -i -s 5 postgres >/dev/null 2>&1
	local y
	y=$(sql "$w" -c "select pg_current_wal_lsn()")
	run "$BIN/pgbench" -h "$w/sock" -T 8 -c 2 postgres >/dev/null 2>&1
	stop "$w/data"
	promote_by_recovery "$w"
	sql "$w" -c "select pg_switch_wal()" >/dev/null
	sleep 1
	stop "$w/data"
	cat >>"$w/bb/postgresql.conf" <<CONF
recovery_target_lsn = '$y'
recovery_target_timeline = '2'
recovery_target_action = 'promote'
CONF
	run touch "$w/bb/recovery.signal"
	run "$BIN/pg_ctl" -D "$w/bb" -l "$w/log2" -w start >/dev/null
	sleep 2
	stop "$w/bb"
}

W=$(mktemp -d /tmp/mkfixtures.XXXXXX)
chown postgres "$W"
trap 'rm -rf "$W"' EXIT
mkdir -p "$OUT/pg15-1mib" "$OUT/pg15-16mib" "$OUT/pg15-timeline3" "$OUT/pg15-basebackup"

switches "$W/a" 1
A=$W/a/arch
for f in 000000010000000000000006 00000001000000000000000B.partial 00000002000000000000000B; do
	gzip -9nc "$A/$f" >"$OUT/pg15-1mib/$f.gz"
done
cp "$A"/00000002.history "$A"/*.backup "$OUT/pg15-1mib/"

switches "$W/b" 16
B=$W/b/arch
gzip -9nc "$B/000000010000000000000003" >"$OUT/pg15-16mib/000000010000000000000003.gz"
cp "$B"/*.backup "$OUT/pg15-16mib/"

timeline3 "$W/c"
cp "$W"/c/arch/*.history "$OUT/pg15-timeline3/"
cp "$W/c/pg_control.basebackup" "$OUT/pg15-basebackup/pg_control"
ls -lR "$OUT"
