package stream_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/internal/pg/wal"
	"github.com/pgvault/pgvault/repo"
	"github.com/pgvault/pgvault/repo/repotest"
	"github.com/pgvault/pgvault/stream"
)

func TestFetch(t *testing.T) {
	ctx := context.Background()
	r, _ := repotest.New(t)
	name3, seg3 := seg(1, 3, mib)
	name4, seg4 := seg(1, 4, mib)
	partial4 := bytes.Clone(seg4[:300*1024])
	partial4[300*1024-1] = 0x5A // streamed WAL up to here
	name5, seg5 := seg(1, 5, mib)
	partial5 := bytes.Clone(seg5[:wal.PageSize*2])
	seg16 := fixture(t, "pg15-16mib/000000010000000000000003.gz")
	hist := []byte("1\t0/4100000\tno recovery target specified\n")
	backupHist := fixture(t, "pg15-16mib/000000010000000000000003.00000028.backup")

	mustSave(t, r, name3, seg3)
	mustSave(t, r, name4+".partial", partial4)
	mustSave(t, r, name5, seg5)
	mustSave(t, r, name5+".partial", partial5) // the complete one wins
	mustSave(t, r, "00000002.history", hist)
	mustSave(t, r, "000000010000000000000003.00000028.backup", backupHist)
	r16, _ := repotest.New(t)
	mustSave(t, r16, "000000010000000000000003", seg16)
	// Damaged copies: a segment stored under another segment's name (only
	// possible through the repository API), and a bad history file.
	if _, err := r.SaveWAL(ctx, 1, segName(1, 8), seg3, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveWAL(ctx, 3, "00000003.history", []byte("garbage\n"), false); err != nil {
		t.Fatal(err)
	}

	padded4 := make([]byte, mib)
	copy(padded4, partial4)
	tests := []struct {
		name        string
		repo        *repo.Repository
		file        string
		want        []byte
		fromPartial bool
		segSize     uint64
		wantErr     error
	}{
		{"complete segment", r, name3, seg3, false, mib, nil},
		{"16 MiB segment", r16, "000000010000000000000003", seg16, false, 16 * mib, nil},
		{"only the partial: zero-padded", r, name4, padded4, true, mib, nil},
		{"complete wins over partial", r, name5, seg5, false, mib, nil},
		{"partial by its own name, as stored", r, name4 + ".partial", partial4, false, mib, nil},
		{"history", r, "00000002.history", hist, false, 0, nil},
		{"backup history", r, "000000010000000000000003.00000028.backup", backupHist, false, 0, nil},
		{"not archived", r, segName(1, 6), nil, false, 0, repo.ErrWALNotFound},
		{"history not archived", r, "00000004.history", nil, false, 0, repo.ErrWALNotFound},
		{"stored under the wrong name", r, segName(1, 8), nil, false, 0, wal.ErrInvalidSegment},
		{"damaged history", r, "00000003.history", nil, false, 0, wal.ErrInvalidHistory},
		{"bad name", r, "RECOVERYXLOG", nil, false, 0, wal.ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, res, err := stream.Fetch(ctx, tt.repo, tt.file)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || data != nil {
					t.Fatalf("err = %v (%d bytes), want %v", err, len(data), tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.file) {
					t.Fatalf("error %q does not name %s", err, tt.file)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, tt.want) {
				t.Fatalf("served %d bytes that differ from the %d expected", len(data), len(tt.want))
			}
			if res.FromPartial != tt.fromPartial || res.SegmentSize != tt.segSize || res.Size != int64(len(tt.want)) || res.Source != stream.SourceRepository {
				t.Fatalf("result %+v", res)
			}
			if tt.fromPartial && res.StoredSize != int64(len(partial4)) {
				t.Fatalf("stored size %d", res.StoredSize)
			}
		})
	}
}

func TestArchived(t *testing.T) {
	ctx := context.Background()
	r, be := repotest.New(t)
	name3, seg3 := seg(1, 3, mib)
	name4, seg4 := seg(1, 4, mib)
	mustSave(t, r, name3, seg3)
	mustSave(t, r, name4+".partial", seg4[:wal.PageSize])
	mustSave(t, r, "00000002.history", []byte("1\t0/500000\tx\n"))
	tests := []struct {
		name string
		want bool
	}{
		{name3, true},
		{name4, true}, // served from its partial
		{name4 + ".partial", true},
		{segName(1, 5), false},
		{segName(2, 3), false},
		{"00000002.history", true},
		{"00000003.history", false},
	}
	for _, tt := range tests {
		got, err := stream.Archived(ctx, be, tt.name)
		if err != nil || got != tt.want {
			t.Errorf("Archived(%s) = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	if _, err := stream.Archived(ctx, be, "RECOVERYXLOG"); !errors.Is(err, wal.ErrInvalidName) {
		t.Errorf("bad name: %v", err)
	}
}
