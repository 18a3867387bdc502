package chunk

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/crypto/blake2b"
)

// BenchmarkIDHash compares the two keyed hashes considered for blob IDs.
// The winner on the project machines is the one Hasher uses.
func BenchmarkIDHash(b *testing.B) {
	data := TestPages(16, 1) // 128 KiB
	key := testKey(1)
	b.Run("hmac-sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			m := hmac.New(sha256.New, key)
			m.Write(data)
			m.Sum(nil)
		}
	})
	b.Run("blake2b-256-keyed", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			m, _ := blake2b.New256(key)
			m.Write(data)
			m.Sum(nil)
		}
	})
}

// BenchmarkSeal measures zstd + AES-GCM on page-shaped data by zstd level.
func BenchmarkSeal(b *testing.B) {
	data := TestPages(16, 1)
	for _, level := range []int{1, 3, 6} {
		b.Run(fmt.Sprintf("level=%d", level), func(b *testing.B) {
			c := newCodec(b, true, level)
			id := c.Hasher().ID(data)
			var out []byte
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				out = c.Seal(out[:0], id, data)
			}
			b.ReportMetric(float64(len(data))/float64(len(out)), "ratio")
		})
	}
}

// BenchmarkOpen measures the read path: authenticate + decompress.
func BenchmarkOpen(b *testing.B) {
	data := TestPages(16, 1)
	c := newCodec(b, true, 3)
	id := c.Hasher().ID(data)
	sealed := c.Seal(nil, id, data)
	var out []byte
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var err error
		if out, err = c.Open(out[:0], id, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipeline is the CPU side of a backup: split page data into fixed
// chunks, hash each, compress and encrypt it, on every core.
func BenchmarkPipeline(b *testing.B) {
	data := TestPages(8192, 1) // 64 MiB
	for _, size := range []int{64 << 10, 128 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("chunk=%dKiB", size>>10), func(b *testing.B) {
			c := newCodec(b, true, 3)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				runPipeline(b, c, data, size)
			}
		})
	}
}

func runPipeline(b *testing.B, c *Codec, data []byte, size int) {
	s, _ := NewFixed(bytes.NewReader(data), size)
	work := make(chan []byte, 16)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []byte
			for chunk := range work {
				out = c.Seal(out[:0], c.Hasher().ID(chunk), chunk)
			}
		}()
	}
	for {
		buf, err := s.Next(make([]byte, size))
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		work <- buf
	}
	close(work)
	wg.Wait()
}

// BenchmarkFixedChunkSize is the evidence for DefaultFixedSize. For each
// candidate size it stores a 64 MiB relation-like file, then changes it the
// ways PostgreSQL does and reports what a second backup adds:
//
//	full-MB          stored size of the first backup
//	scattered-MB     after rewriting 0.2% of pages at random (a few hundred
//	                 pgbench transactions per GB)
//	contiguous-MB    after rewriting a contiguous 5% of pages
//	entries/GiB      index entries a GiB of data needs
func BenchmarkFixedChunkSize(b *testing.B) {
	const pages = 8192
	base := TestPages(pages, 1)
	rng := rand.New(rand.NewPCG(9, 9))
	scattered := bytes.Clone(base)
	for range pages / 500 {
		p := rng.IntN(pages)
		copy(scattered[p*PageSize:], TestPages(1, rng.Uint64()))
	}
	contiguous := bytes.Clone(base)
	start := pages / 3
	copy(contiguous[start*PageSize:], TestPages(pages/20, 77))

	for _, size := range []int{64 << 10, 128 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("chunk=%dKiB", size>>10), func(b *testing.B) {
			c := newCodec(b, true, 3)
			var full, scat, cont int
			for b.Loop() {
				seen := map[ID]bool{}
				full = store(c, base, size, seen)
				scat = store(c, scattered, size, seen)
				seen = map[ID]bool{}
				store(c, base, size, seen)
				cont = store(c, contiguous, size, seen)
			}
			b.ReportMetric(float64(full)/1e6, "full-MB")
			b.ReportMetric(float64(scat)/1e6, "scattered-MB")
			b.ReportMetric(float64(cont)/1e6, "contiguous-MB")
			b.ReportMetric(float64(1<<30/size), "entries/GiB")
		})
	}
}

// store returns the sealed bytes that data adds to a store holding seen.
func store(c *Codec, data []byte, size int, seen map[ID]bool) int {
	s, _ := NewFixed(bytes.NewReader(data), size)
	added := 0
	var out []byte
	for {
		chunk, err := s.Next(nil)
		if err != nil {
			return added
		}
		id := c.Hasher().ID(chunk)
		if seen[id] {
			continue
		}
		seen[id] = true
		out = c.Seal(out[:0], id, chunk)
		added += len(out)
	}
}

// BenchmarkDataSealing compares a data blob sealed to the repository's
// public key (format 2) with one sealed with the repository key (format
// 1), both ways, at the default level: the X25519 agreement is paid once
// per sealsPerDataKey blobs by a writer and once per ephemeral key by a
// reader.
func BenchmarkDataSealing(b *testing.B) {
	data := TestPages(16, 1)
	v2, _ := newDataCodecs(b)
	v1 := newCodec(b, true, 0)
	id := v1.Hasher().ID(data)
	for _, c := range []struct {
		name string
		seal func(dst []byte) []byte
		open func(dst, sealed []byte) ([]byte, error)
	}{
		{"format=1", func(dst []byte) []byte { return v1.Seal(dst, id, data) }, func(dst, s []byte) ([]byte, error) { return v1.Open(dst, id, s) }},
		{"format=2", func(dst []byte) []byte { s, _ := v2.SealData(dst, id, data); return s }, func(dst, s []byte) ([]byte, error) { return v2.OpenData(dst, id, s) }},
	} {
		b.Run(c.name+"/seal", func(b *testing.B) {
			var out []byte
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				out = c.seal(out[:0])
			}
		})
		b.Run(c.name+"/open", func(b *testing.B) {
			sealed := c.seal(nil)
			var out []byte
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var err error
				if out, err = c.open(out[:0], sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
