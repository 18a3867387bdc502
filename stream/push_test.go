package stream_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
	"github.com/pgvault/pgvault/stream"
)

const (
	mib    = uint64(1 << 20)
	sysID  = uint64(7300000000000000001)
	fixDir = "../internal/pg/wal/testdata/"
)

// fixture reads a real WAL file from internal/pg/wal/testdata, gunzipping .gz.
func fixture(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(fixDir + path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(path, ".gz") {
		return data
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// seg is a fake complete segment number no of timeline tli.
func seg(tli uint32, no uint64, segSize uint64) (string, []byte) {
	s := wal.Segment{Timeline: tli, No: no}
	return s.Name(segSize), wal.FakeSegment(tli, s.Start(segSize), segSize, sysID)
}

func segName(tli uint32, no uint64) string { return wal.Segment{Timeline: tli, No: no}.Name(mib) }

func mustSave(t testing.TB, r *repo.Repository, name string, data []byte) {
	t.Helper()
	v, err := wal.VerifyFile(name, data)
	if err != nil {
		t.Fatalf("test data %s: %v", name, err)
	}
	if _, err := r.SaveWAL(context.Background(), v.Timeline, name, data, v.Kind == wal.KindPartial); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFile(t *testing.T) {
	seg1m := fixture(t, "pg15-1mib/000000010000000000000006.gz")
	seg16m := fixture(t, "pg15-16mib/000000010000000000000003.gz")
	partial := fixture(t, "pg15-1mib/00000001000000000000000B.partial.gz")
	tli2 := fixture(t, "pg15-1mib/00000002000000000000000B.gz")
	hist := fixture(t, "pg15-1mib/00000002.history")
	backupHist := fixture(t, "pg15-1mib/000000010000000000000008.00000028.backup")
	_, fake1g := seg(1, 5, 1<<30)
	_, fake3 := seg(3, 5, mib)
	shortPartial := bytes.Clone(seg1m[:3*wal.PageSize])

	tests := []struct {
		name     string
		file     string
		data     []byte
		kind     wal.FileKind
		tli      uint32
		segSize  uint64
		wantErr  error
		errMatch string
	}{
		{"1 MiB segment", "000000010000000000000006", seg1m, wal.KindSegment, 1, mib, nil, ""},
		{"16 MiB segment", "000000010000000000000003", seg16m, wal.KindSegment, 1, 16 * mib, nil, ""},
		{"1 GiB fake segment", wal.Segment{Timeline: 1, No: 5}.Name(1 << 30), fake1g, wal.KindSegment, 1, 1 << 30, nil, ""},
		{"partial at promotion", "00000001000000000000000B.partial", partial, wal.KindPartial, 1, mib, nil, ""},
		{"short partial", "000000010000000000000006.partial", shortPartial, wal.KindPartial, 1, mib, nil, ""},
		{"new timeline's switch segment", "00000002000000000000000B", tli2, wal.KindSegment, 2, mib, nil, ""},
		{"history", "00000002.history", hist, wal.KindHistory, 2, 0, nil, ""},
		{"empty history", "00000005.history", nil, wal.KindHistory, 5, 0, nil, ""},
		{"backup history", "000000010000000000000008.00000028.backup", backupHist, wal.KindBackupHistory, 1, 0, nil, ""},

		{"segment under the next name", "000000010000000000000007", seg1m, 0, 0, 0, wal.ErrInvalidSegment, "page address"},
		{"segment under an older timeline", "000000020000000000000005", fake3, 0, 0, 0, wal.ErrInvalidSegment, "later than the file name's"},
		{"truncated segment", "000000010000000000000006", seg1m[:mib/2], 0, 0, 0, wal.ErrInvalidSegment, "bytes"},
		{"zeros", "000000010000000000000006", make([]byte, mib), 0, 0, 0, wal.ErrInvalidSegment, "all zeros"},
		{"empty segment", "000000010000000000000006", nil, 0, 0, 0, wal.ErrInvalidSegment, "too short"},
		{"text as segment", "000000010000000000000006", []byte(strings.Repeat("not WAL ", 100)), 0, 0, 0, wal.ErrInvalidSegment, "magic"},
		{"partial under the wrong name", "000000010000000000000007.partial", partial, 0, 0, 0, wal.ErrInvalidSegment, ""},
		{"partial too short", "00000001000000000000000B.partial", partial[:20], 0, 0, 0, wal.ErrInvalidSegment, "too short"},
		{"history garbage", "00000002.history", []byte("one\t0/1\tx\n"), 0, 0, 0, wal.ErrInvalidHistory, "line 1"},
		{"history naming a newer parent", "00000002.history", []byte("1\t0/1000000\ta\n2\t0/2000000\tb\n"), 0, 0, 0, wal.ErrInvalidHistory, ""},
		{"lower-case name", "00000001000000000000000b", tli2, 0, 0, 0, wal.ErrInvalidName, ""},
		{"not a WAL name", "postgresql.conf", []byte("x"), 0, 0, 0, wal.ErrInvalidName, ""},
		{"timeline 0", "000000000000000000000001", seg1m, 0, 0, 0, wal.ErrInvalidName, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := wal.VerifyFile(tt.file, tt.data)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errMatch) {
					t.Fatalf("err = %q, want it to mention %q", err, tt.errMatch)
				}
				if !strings.Contains(err.Error(), tt.file) {
					t.Fatalf("err = %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Kind != tt.kind || v.Timeline != tt.tli || v.SegmentSize != tt.segSize {
				t.Fatalf("got kind %v tli %d segsize %d, want %v %d %d", v.Kind, v.Timeline, v.SegmentSize, tt.kind, tt.tli, tt.segSize)
			}
			if tt.segSize != 0 && (v.SystemID == 0 || v.PGVersion != 15) {
				t.Fatalf("system id %d, version %d", v.SystemID, v.PGVersion)
			}
		})
	}
}

func TestPush(t *testing.T) {
	ctx := context.Background()
	name5, seg5 := seg(1, 5, mib)
	_, seg6 := seg(1, 6, mib)
	other5 := wal.FakeSegment(1, wal.Segment{Timeline: 1, No: 5}.Start(mib), mib, sysID+1) // another cluster's
	partial := bytes.Clone(seg6[:200*1024])

	type step struct {
		name          string
		data          []byte
		wantErr       error
		alreadyStored bool
		partial       bool
		tli           uint32
	}
	tests := []struct {
		name      string
		steps     []step
		conflicts int
		stored    []string // "TLI/name" of the catalogue afterwards
	}{
		{"segment", []step{{name: name5, data: seg5, tli: 1}}, 0, []string{"1/" + name5}},
		{"identical push twice", []step{{name: name5, data: seg5, tli: 1}, {name: name5, data: seg5, tli: 1, alreadyStored: true}}, 0,
			[]string{"1/" + name5}},
		{"different content under a complete name", []step{
			{name: name5, data: seg5, tli: 1},
			{name: name5, data: other5, wantErr: repo.ErrWALConflict},
		}, 1, []string{"1/" + name5}},
		{"header does not match the name", []step{{name: segName(1, 7), data: seg5, wantErr: wal.ErrInvalidSegment}}, 0, nil},
		{"not a WAL name", []step{{name: "base.tar", data: seg5, wantErr: wal.ErrInvalidName}}, 0, nil},
		{"history files go to their timeline", []step{
			{name: "00000002.history", data: []byte("1\t0/5000100\tno recovery target specified\n"), tli: 2},
			{name: "00000002.history", data: []byte("1\t0/5000100\tno recovery target specified\n"), tli: 2, alreadyStored: true},
			{name: "00000002.history", data: []byte("1\t0/6000000\telsewhere\n"), wantErr: repo.ErrWALConflict},
		}, 1, []string{"2/00000002.history"}},
		{"backup history as is", []step{{name: "000000010000000000000005.00000028.backup", data: []byte("START WAL LOCATION: 0/5000028\n"), tli: 1}}, 0,
			[]string{"1/000000010000000000000005.00000028.backup"}},
		{"partial at promotion, replaced", []step{
			{name: segName(1, 6) + ".partial", data: partial, partial: true, tli: 1},
			{name: segName(1, 6) + ".partial", data: seg6, partial: true, tli: 1},
		}, 0, []string{"1/" + segName(1, 6) + ".partial"}},
		{"bad history refused", []step{{name: "00000003.history", data: []byte("3\t0/1\tx\n"), wantErr: wal.ErrInvalidHistory}}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := repotest.New(t)
			conflicts := 0
			opts := stream.PushOptions{OnConflict: func(c stream.Conflict) {
				conflicts++
				if c.Stored == nil || c.Stored.Name != c.Name {
					t.Errorf("conflict without the stored entry: %+v", c)
				}
			}}
			for i, s := range tt.steps {
				res, err := stream.Push(ctx, r, s.name, s.data, opts)
				if s.wantErr != nil {
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: err = %v, want %v", i, err, s.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if res.AlreadyStored != s.alreadyStored || res.Partial != s.partial || res.Timeline != s.tli || res.Size != int64(len(s.data)) {
					t.Fatalf("step %d: result %+v", i, res)
				}
				data, wf, err := r.LoadWAL(ctx, s.tli, s.name)
				if err != nil || !bytes.Equal(data, s.data) || wf.Partial != s.partial {
					t.Fatalf("step %d: stored copy differs (%v)", i, err)
				}
			}
			if conflicts != tt.conflicts {
				t.Fatalf("OnConflict called %d times, want %d", conflicts, tt.conflicts)
			}
			got := catalogue(t, r)
			if strings.Join(got, ",") != strings.Join(tt.stored, ",") {
				t.Fatalf("catalogue %v, want %v", got, tt.stored)
			}
		})
	}
}

// catalogue lists the WAL catalogue as sorted "TLI/name".
func catalogue(t testing.TB, r *repo.Repository) []string {
	t.Helper()
	entries, err := r.ListWAL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%d/%s", e.Timeline, e.Name))
	}
	slices.Sort(out)
	return out
}

func TestPushConflictError(t *testing.T) {
	ctx := context.Background()
	r, _ := repotest.New(t)
	name, data := seg(1, 9, mib)
	if _, err := stream.Push(ctx, r, name, data, stream.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	other := wal.FakeSegment(1, pglogrepl.LSN(9*mib), mib, sysID+7)
	_, err := stream.Push(ctx, r, name, other, stream.PushOptions{})
	var ce *stream.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, repo.ErrWALConflict) {
		t.Fatalf("err = %v", err)
	}
	if ce.Conflict.Name != name || ce.Conflict.Timeline != 1 || ce.Conflict.Stored == nil || !strings.Contains(err.Error(), name) {
		t.Fatalf("conflict %+v: %v", ce.Conflict, err)
	}
}

func TestPushFile(t *testing.T) {
	ctx := context.Background()
	r, _ := repotest.New(t)
	dir := t.TempDir()
	name, data := seg(1, 3, mib)
	path := filepath.Join(dir, name)
	os.WriteFile(path, data, 0o600)
	res, err := stream.PushFile(ctx, r, path, stream.PushOptions{})
	if err != nil || res.Name != name || res.SegmentSize != mib || res.SystemID != "7300000000000000001" {
		t.Fatalf("push %s: %+v, %v", path, res, err)
	}
	if _, err := stream.PushFile(ctx, r, filepath.Join(dir, segName(1, 4)), stream.PushOptions{}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := stream.PushFile(ctx, r, filepath.Join(dir, "notes.txt"), stream.PushOptions{}); !errors.Is(err, wal.ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
}

func FuzzVerifyFile(f *testing.F) {
	_, s := seg(1, 2, mib)
	f.Add("000000010000000000000002", s[:3*wal.PageSize])
	f.Add("000000010000000000000002.partial", s[:wal.PageSize+100])
	f.Add("00000002.history", []byte("1\t0/3000000\tx\n"))
	f.Add("000000010000000000000002.00000028.backup", []byte("x"))
	f.Add("zz", []byte{})
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		v, err := wal.VerifyFile(name, data)
		if err != nil {
			if !errors.Is(err, wal.ErrInvalidName) && !errors.Is(err, wal.ErrInvalidSegment) && !errors.Is(err, wal.ErrInvalidHistory) {
				t.Fatalf("error %v matches none of the sentinels", err)
			}
			return
		}
		if v.Kind == wal.KindInvalid || v.Timeline == 0 || v.Name != name {
			t.Fatalf("accepted %q as %+v", name, v)
		}
		if (v.Kind == wal.KindSegment) && uint64(len(data)) != v.SegmentSize {
			t.Fatalf("accepted a %d-byte segment of size %d", len(data), v.SegmentSize)
		}
	})
}
