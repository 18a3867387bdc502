package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/repo/repotest"
)

// Fuzz targets for the decoders of what the server sends during
// BASE_BACKUP (CopyData framing, the tar archives, backup_manifest) and
// of the backup info pgvault stores in a snapshot. The seed corpora (and
// testdata/fuzz) run in a plain `go test`; `make fuzz` explores.

func FuzzParseCopyData(f *testing.F) {
	f.Add([]byte("nbase.tar\x00\x00"))
	f.Add([]byte("n16384.tar\x00/srv/ts\x00"))
	f.Add([]byte("dsome tar bytes"))
	f.Add([]byte("p\x00\x00\x00\x00\x00\x01\x00\x00"))
	f.Add([]byte("m"))
	f.Add([]byte("x"))
	f.Add([]byte("n../../etc.tar\x00\x00"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		ev, err := ParseCopyData(msg)
		if err != nil {
			if !errors.Is(err, ErrBadCopyData) {
				t.Fatalf("error %v does not match ErrBadCopyData", err)
			}
			return
		}
		if ev.Kind != msg[0] {
			t.Fatalf("kind %q, message starts with %q", ev.Kind, msg[0])
		}
		switch ev.Kind {
		case copyNewArchive:
			if validArchiveName(ev.ArchiveName) != nil {
				t.Fatalf("accepted archive name %q", ev.ArchiveName)
			}
			again := append(append(append([]byte{copyNewArchive}, ev.ArchiveName...), 0), append([]byte(ev.TablespacePath), 0)...)
			if !bytes.Equal(again, msg) {
				t.Fatalf("archive message does not re-encode to itself: %q vs %q", again, msg)
			}
		case copyData:
			if !bytes.Equal(ev.Data, msg[1:]) {
				t.Fatal("data message payload changed")
			}
		case copyProgress:
			if len(msg) != 9 {
				t.Fatalf("progress message of %d bytes accepted", len(msg))
			}
		case copyManifest:
		default:
			t.Fatalf("accepted unknown kind %q", ev.Kind)
		}
	})
}

func FuzzInfoJSON(f *testing.F) {
	good, _ := json.Marshal(&Info{
		SystemIdentifier: "7345", ServerVersion: "150010", Timeline: 1,
		StartLSN: pglogrepl.LSN(0x3000028), StopLSN: pglogrepl.LSN(0x3000100), StopTimeline: 1,
		StartTime: time.Unix(1700000000, 0).UTC(), StopTime: time.Unix(1700000005, 0).UTC(),
		Label: "x", BackupLabel: "START WAL LOCATION: 0/3000028", Tablespaces: []Tablespace{{OID: 16384, Location: "/srv/ts"}},
	})
	f.Add(good)
	f.Add([]byte(`{"start_lsn":"0/0","stop_lsn":"FFFFFFFF/FFFFFFFF"}`))
	f.Add([]byte(`{"start_lsn":"zz"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var info Info
		if err := json.Unmarshal(data, &info); err != nil {
			return
		}
		enc, err := json.Marshal(&info)
		if err != nil {
			t.Fatalf("decoded info does not encode: %v", err)
		}
		var again Info
		if err := json.Unmarshal(enc, &again); err != nil {
			t.Fatalf("re-encoded info does not decode: %v\n%s", err, enc)
		}
		if again.StartLSN != info.StartLSN || again.StopLSN != info.StopLSN || again.Timeline != info.Timeline {
			t.Fatalf("round trip changed the positions: %+v vs %+v", again, info)
		}
	})
}

func FuzzPatchManifest(f *testing.F) {
	f.Add(sampleManifest(), "tablespace_map", []byte("16384 /new/place\n"))
	f.Add(sampleManifest(), "backup_label", []byte(""))
	f.Add([]byte(`{ "Path": "a", "Size": 1, "Checksum-Algorithm": "CRC32C", "Checksum": "00" }`+"\n"), "a", []byte("x"))
	f.Fuzz(func(t *testing.T, manifest []byte, path string, content []byte) {
		out, err := PatchManifest(manifest, path, content)
		if err != nil {
			return
		}
		again, err := PatchManifest(out, path, content)
		if err != nil {
			t.Fatalf("a patched manifest cannot be patched again: %v", err)
		}
		if !bytes.Equal(again, out) {
			t.Fatal("patching twice with the same content is not idempotent")
		}
	})
}

// FuzzReadTar feeds arbitrary bytes to the tar ingest of a base backup:
// it must fail cleanly or store entries with clean names, never panic.
func FuzzReadTar(f *testing.F) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "base/", Typeflag: tar.TypeDir, Mode: 0o700})
	tw.WriteHeader(&tar.Header{Name: "base/1/1234", Typeflag: tar.TypeReg, Mode: 0o600, Size: 5})
	tw.Write([]byte("hello"))
	tw.WriteHeader(&tar.Header{Name: "backup_label", Typeflag: tar.TypeReg, Mode: 0o600, Size: 4})
	tw.Write([]byte("x\ny\n"))
	tw.WriteHeader(&tar.Header{Name: "pg_wal", Typeflag: tar.TypeSymlink, Linkname: "/elsewhere"})
	tw.Close()
	f.Add(b.Bytes(), false)
	f.Add(b.Bytes()[:700], true)
	f.Add([]byte{}, false)
	r, _ := repotest.New(f)
	f.Fuzz(func(t *testing.T, data []byte, tablespace bool) {
		w := r.NewSnapshotWriter(context.Background())
		defer w.Abort()
		in := &ingest{w: w, r: r, info: &Info{}}
		prefix := ""
		if tablespace {
			prefix = "pg_tblspc/16384"
		}
		ch := make(chan []byte, 1)
		ch <- data
		close(ch)
		_ = in.readTar(prefix, &chanReader{ch: ch})
	})
}
