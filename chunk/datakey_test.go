package chunk

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"testing"
)

// newDataCodecs returns a full codec and a write-only one of the same
// format-2 repository.
func newDataCodecs(t testing.TB) (full, writeOnly *Codec) {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(priv []byte) *Codec {
		c, err := NewCodec(CodecOptions{Hasher: NewHasher(testKey(7)), EncKey: testKey(9), DataPublic: k.PublicKey().Bytes(), DataPrivate: priv})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return mk(k.Bytes()), mk(nil)
}

func TestDataSealing(t *testing.T) {
	full, wo := newDataCodecs(t)
	plain := TestPages(3, 2)
	id := full.Hasher().ID(plain)
	for name, sealer := range map[string]*Codec{"full key": full, "write-only key": wo} {
		t.Run(name, func(t *testing.T) {
			sealed, err := sealer.SealData(nil, id, plain)
			if err != nil {
				t.Fatal(err)
			}
			got, err := full.OpenData(nil, id, sealed)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("the full key does not open it: %v", err)
			}
			if _, err := wo.OpenData(nil, id, sealed); !errors.Is(err, ErrWriteOnly) || errors.Is(err, ErrCorrupt) {
				t.Fatalf("the write-only key: got %v, want ErrWriteOnly", err)
			}
			// Neither the metadata key nor the other kind of blob opens it.
			if _, err := full.Open(nil, id, sealed); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open of a data blob: %v", err)
			}
			if _, err := full.OpenData(nil, full.Hasher().ID([]byte("other")), sealed); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a data blob under another ID: %v", err)
			}
			for _, at := range []int{0, EphemeralSize - 1, EphemeralSize, EphemeralSize + NonceSize + 2, len(sealed) - 1} {
				if _, err := full.OpenData(nil, id, flip(sealed, at)); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("byte %d flipped: %v", at, err)
				}
			}
			if _, err := full.OpenData(nil, id, sealed[:EphemeralSize+NonceSize]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("truncated: %v", err)
			}
		})
	}
	// Metadata stays readable by the write-only key.
	meta := wo.SealMeta(nil, "snapshot", []byte(`{"x":1}`))
	if got, err := wo.OpenMeta("snapshot", meta); err != nil || string(got) != `{"x":1}` {
		t.Fatalf("write-only OpenMeta: %q %v", got, err)
	}
	if !wo.WriteOnly() || full.WriteOnly() {
		t.Fatal("WriteOnly reports the wrong kind")
	}
}

// TestDataKeyRotation: a writer draws a new ephemeral key after
// sealsPerDataKey blobs, and a reader opens blobs of both.
func TestDataKeyRotation(t *testing.T) {
	full, wo := newDataCodecs(t)
	plain := []byte("a WAL record")
	id := full.Hasher().ID(plain)
	var first, last []byte
	for i := range sealsPerDataKey + 1 {
		s, err := wo.SealData(nil, id, plain)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = s
		}
		last = s
	}
	if bytes.Equal(first[:EphemeralSize], last[:EphemeralSize]) {
		t.Fatal("the ephemeral key was not renewed")
	}
	for _, s := range [][]byte{first, last} {
		if got, err := full.OpenData(nil, id, s); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("OpenData: %v", err)
		}
	}
}

func TestDataKeyMismatch(t *testing.T) {
	a, _ := ecdh.X25519().GenerateKey(nil)
	b, _ := ecdh.X25519().GenerateKey(nil)
	_, err := NewCodec(CodecOptions{Hasher: NewHasher(testKey(7)), EncKey: testKey(9), DataPublic: a.PublicKey().Bytes(), DataPrivate: b.Bytes()})
	if err == nil {
		t.Fatal("a private key of another pair was accepted")
	}
	if _, err := NewCodec(CodecOptions{Hasher: NewHasher(testKey(7)), DataPublic: a.PublicKey().Bytes()}); err == nil {
		t.Fatal("a data key without encryption was accepted")
	}
}

func FuzzCodecOpenData(f *testing.F) {
	full, _ := newDataCodecs(f)
	plain := TestPages(1, 1)
	id := full.Hasher().ID(plain)
	sealed, err := full.SealData(nil, id, plain)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(sealed[:EphemeralSize+1])
	f.Add(make([]byte, EphemeralSize+NonceSize+TagSize+1))
	f.Fuzz(func(t *testing.T, sealed []byte) {
		got, err := full.OpenData(nil, id, sealed)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatalf("OpenData returned wrong bytes without an error")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error does not match ErrCorrupt: %v", err)
		}
	})
}
