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
