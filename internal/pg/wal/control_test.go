package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

const fixtureControl = "testdata/pg15-basebackup/pg_control"

func TestParseControlFile(t *testing.T) {
	raw := readFixture(t, fixtureControl)
	cf, err := wal.ParseControlFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if cf.SystemID() != 7710659777962280324 || cf.Version() != 1300 || cf.State() != wal.DBInProduction {
		t.Fatalf("system id %d, version %d, state %v", cf.SystemID(), cf.Version(), cf.State())
	}
	if cf.SkipsStartupSync() {
		t.Fatal("a running server's pg_control skips the startup sync")
	}
	changed := cf.WithState(wal.DBShutdownedInRecovery)
	// Only the state and the CRC (offset 288 in PostgreSQL 15) change.
	for i := range raw {
		if raw[i] != changed[i] && !(i >= 16 && i < 20) && !(i >= 288 && i < 292) {
			t.Fatalf("byte %d changed", i)
		}
	}
	again, err := wal.ParseControlFile(changed)
	if err != nil {
		t.Fatal(err)
	}
	if again.State() != wal.DBShutdownedInRecovery || !again.SkipsStartupSync() || again.SystemID() != cf.SystemID() {
		t.Fatalf("after WithState: state %v, system id %d", again.State(), again.SystemID())
	}
	if !bytes.Equal(raw, readFixture(t, fixtureControl)) {
		t.Fatal("WithState changed its input")
	}
}

func TestParseControlFileRejects(t *testing.T) {
	raw := readFixture(t, fixtureControl)
	flip := func(at int) []byte { b := append([]byte(nil), raw...); b[at] ^= 1; return b }
	swapped := append([]byte(nil), raw...)
	binary.BigEndian.PutUint32(swapped[8:], binary.LittleEndian.Uint32(raw[8:]))
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", raw[:20]},
		{"state changed without its CRC", flip(16)},
		{"checkpoint LSN changed", flip(40)},
		{"CRC changed", flip(288)},
		{"cut before the CRC", raw[:200]},
		{"other byte order", swapped},
		{"zeros", make([]byte, 8192)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := wal.ParseControlFile(tc.b); !errors.Is(err, wal.ErrControlFile) {
				t.Fatalf("err %v, want ErrControlFile", err)
			}
		})
	}
}

func FuzzParseControlFile(f *testing.F) {
	raw := readFixture(f, fixtureControl)
	f.Add(raw)
	f.Add(raw[:300])
	f.Add(raw[:40])
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := wal.ParseControlFile(data)
		if err != nil {
			if !errors.Is(err, wal.ErrControlFile) {
				t.Fatalf("error %v does not match ErrControlFile", err)
			}
			return
		}
		for _, s := range []wal.DBState{wal.DBShutdownedInRecovery, wal.DBInProduction, 99} {
			b := cf.WithState(s)
			again, err := wal.ParseControlFile(b)
			if err != nil {
				t.Fatalf("WithState(%v) does not parse: %v", s, err)
			}
			if again.State() != s || again.SystemID() != cf.SystemID() || len(b) != len(data) {
				t.Fatalf("WithState(%v): state %v, system id %d", s, again.State(), again.SystemID())
			}
		}
	})
}
