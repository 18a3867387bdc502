package repo

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pgvault/pgvault/chunk"
)

func FuzzDecodeTree(f *testing.F) {
	id := chunk.ID{1, 2, 3}
	good, _ := EncodeTree(&Tree{Nodes: []Node{
		{Name: "a", Type: NodeFile, Mode: 0o600, Size: 3, Chunks: []ChunkRef{{ID: id, Size: 3}}},
		{Name: "b", Type: NodeDir, Mode: 0o700, Subtree: &id},
		{Name: "c", Type: NodeSymlink, Target: "/x"},
	}})
	f.Add(good)
	f.Add([]byte(`{"nodes":[{"name":"..","type":"dir"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := DecodeTree(data)
		if err != nil {
			return
		}
		again, err := EncodeTree(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeTree(again); err != nil {
			t.Fatalf("re-encoded tree does not decode: %v", err)
		}
		for _, n := range tr.Nodes {
			if _, err := SplitPath(n.Name); err != nil {
				t.Fatalf("decoded a tree with a bad name %q", n.Name)
			}
		}
	})
}

func FuzzDecodeContent(f *testing.F) {
	f.Add(EncodeContent([]ChunkRef{{ID: chunk.ID{9}, Size: 8192}, {ID: chunk.ID{8}, Size: 1}}))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		refs, err := DecodeContent(data)
		if err != nil {
			return
		}
		if string(EncodeContent(refs)) != string(data) {
			t.Fatal("content list does not re-encode to itself")
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	good, _ := json.Marshal(&Snapshot{Version: 1, Kind: "basebackup", Root: chunk.ID{1}, StartTime: time.Unix(1, 0)})
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSnapshot(data)
		if err != nil {
			return
		}
		if s.Root.IsNull() || s.RootNode.Subtree == nil || *s.RootNode.Subtree != s.Root {
			t.Fatal("decoded snapshot has an inconsistent root")
		}
	})
}

func FuzzDecodeWALFile(f *testing.F) {
	good, _ := json.Marshal(&WALFile{Timeline: 1, Name: "000000010000000000000001", Size: 5, Chunks: []ChunkRef{{ID: chunk.ID{1}, Size: 5}}})
	f.Add(good)
	f.Add([]byte(`{"size":-1,"chunks":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		wf, err := DecodeWALFile(data)
		if err != nil {
			return
		}
		var sum int64
		for _, c := range wf.Chunks {
			sum += int64(c.Size)
		}
		if sum != wf.Size {
			t.Fatal("accepted a WAL entry whose chunks do not add up")
		}
	})
}

func FuzzParseKeyFile(f *testing.F) {
	kf, _, _ := wrapKey(&masterKey{EncKey: make([]byte, 32), IDKey: make([]byte, 32), ChunkerPol: 0x3DA3358B4DC173}, []byte("pw"), true, testKDF())
	good, _ := json.Marshal(kf)
	f.Add(good)
	f.Add([]byte(`{"kdf":"argon2id","params":{"time":4000000000,"memory_kib":4000000000,"threads":255}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKeyFile(data)
		if err != nil {
			return
		}
		if kf.KDF == "argon2id" && (kf.Params.Memory > 4<<20 || kf.Params.Time > 100) {
			t.Fatal("accepted KDF parameters that could exhaust the machine")
		}
		if kf.KDF == "argon2id" && kf.Params.Memory <= 1<<10 && kf.Params.Time <= 2 {
			kf.open(kf.kek([]byte("pw"))) // must not panic on any input
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"format":"pgvault","version":1,"id":"0123456789abcdef0123456789abcdef","encryption":"aes-256-gcm","chunk_size":131072}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if c.ChunkSize <= 0 || c.ChunkSize%chunk.PageSize != 0 {
			t.Fatal("accepted a bad chunk size")
		}
	})
}
