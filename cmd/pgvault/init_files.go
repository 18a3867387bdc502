package main

import (
	"fmt"
	"path/filepath"
	"strconv"
)

// quickConfig is the agent configuration init --quick writes: one site
// streaming over a slot, a backup a day at a quiet hour, a week kept.
func quickConfig(site, conninfo, repoURL, pwFile, cache, dir, http string) string {
	q := strconv.Quote
	return fmt.Sprintf(`# Written by pgvault init --quick. Every field: docs/reference/config.md.
# Check a change with: pgvault agent --check-config --config %[7]s
sites:
  %[1]s:
    pg: %[2]s
    repo: %[3]s
    password_file: %[4]s
    cache_dir: %[5]s
    mode: stream          # WAL over replication slot "pgvault" (created by the agent)
    slot: pgvault
    basebackup:
      interval_hours: 24
      hour: 3
      minute: 0
    retention:
      basebackup_count: 7
      basebackup_count_min: 2
http:
  listen: %[6]s
state_file: %[8]s
alert_dir: %[9]s
maintenance_mode_file: %[10]s
`, site, q(conninfo), q(repoURL), q(pwFile), q(cache), q(http), q(filepath.Join(dir, "pgvault.yaml")),
		q(filepath.Join(dir, "state.json")), q(filepath.Join(dir, "alerts")), q(filepath.Join(dir, "maintenance_mode_file")))
}

// quickUnit is a systemd unit running the agent as the cluster's owner
// (peer authentication on the socket, local backups read the data
// directory), writing only in dir.
func quickUnit(exe, owner, config, dir, dataDir, unitPath string) string {
	return fmt.Sprintf(`# Written by pgvault init --quick. Install:
#   sudo cp %[5]s /etc/systemd/system/ && sudo systemctl enable --now %[6]s
[Unit]
Description=pgvault agent for %[4]s
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=simple
User=%[2]s
ExecStart=%[1]s agent --config %[3]s
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=5min
Restart=on-failure
RestartSec=10s
RestartPreventExitStatus=2
UMask=0077
NoNewPrivileges=yes
ProtectSystem=full
ReadWritePaths=%[7]s
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
`, exe, owner, config, dataDir, unitPath, filepath.Base(unitPath), dir)
}
