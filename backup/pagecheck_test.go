package backup

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// goldenPage is a page copied from a PostgreSQL 15 cluster initialised with
// data checksums (see testdata/pages/README). Its file name carries the block
// number the server checksummed it under: <relation>-blk<N>.page.
type goldenPage struct {
	name  string
	blkno uint32
	data  []byte
}

func (g goldenPage) isNew() bool { return binary.LittleEndian.Uint16(g.data[pdUpper:]) == 0 }

func (g goldenPage) lsn() uint64 {
	return uint64(binary.LittleEndian.Uint32(g.data[pdLSNHi:]))<<32 | uint64(binary.LittleEndian.Uint32(g.data[pdLSNLo:]))
}

func goldenPages(t testing.TB) []goldenPage {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "pages", "*.page"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden pages in testdata/pages")
	}
	var pages []goldenPage
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".page")
		_, n, ok := strings.Cut(name, "-blk")
		blkno, err := strconv.ParseUint(n, 10, 32)
		if !ok || err != nil {
			t.Fatalf("%s: name does not end in -blk<N>.page", f)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != PageSize {
			t.Fatalf("%s: %d bytes, want %d", f, len(data), PageSize)
		}
		pages = append(pages, goldenPage{name: name, blkno: uint32(blkno), data: data})
	}
	return pages
}

// checkedGoldenPages are the golden pages that carry a checksum.
func checkedGoldenPages(t testing.TB) []goldenPage {
	var pages []goldenPage
	for _, g := range goldenPages(t) {
		if !g.isNew() {
			pages = append(pages, g)
		}
	}
	if len(pages) == 0 {
		t.Fatal("no golden page carries a checksum")
	}
	return pages
}

// referencePageChecksum follows checksum_impl.h step by step, without the
// lane blocking and header masking that make PageChecksum fast, so that the
// fuzz target can compare the two on any bytes.
func referencePageChecksum(page []byte, blkno uint32) uint16 {
	buf := slices.Clone(page[:PageSize])
	buf[pdChecksum], buf[pdChecksum+1] = 0, 0
	var words [PageSize / checksumRow][checksumLanes]uint32
	for i := range words {
		for j := range words[i] {
			words[i][j] = binary.LittleEndian.Uint32(buf[(i*checksumLanes+j)*4:])
		}
	}
	mix := func(c, v uint32) uint32 {
		tmp := c ^ v
		return tmp*16777619 ^ tmp>>17
	}
	sums := checksumBaseOffsets
	for i := range words {
		for j := range sums {
			sums[j] = mix(sums[j], words[i][j])
		}
	}
	for range 2 {
		for j := range sums {
			sums[j] = mix(sums[j], 0)
		}
	}
	var result uint32
	for _, s := range sums {
		result ^= s
	}
	result ^= blkno
	return uint16(result%65535 + 1)
}

func referenceBadPages(data []byte, firstBlock uint32, startLSN uint64) []uint32 {
	var bad []uint32
	for i := 0; (i+1)*PageSize <= len(data); i++ {
		page := data[i*PageSize : (i+1)*PageSize]
		lsn := uint64(binary.LittleEndian.Uint32(page[0:]))<<32 | uint64(binary.LittleEndian.Uint32(page[4:]))
		if binary.LittleEndian.Uint16(page[14:]) == 0 || lsn >= startLSN {
			continue
		}
		blkno := firstBlock + uint32(i)
		if referencePageChecksum(page, blkno) != binary.LittleEndian.Uint16(page[8:]) {
			bad = append(bad, blkno)
		}
	}
	return bad
}

func TestPageChecksumGolden(t *testing.T) {
	for _, g := range checkedGoldenPages(t) {
		t.Run(g.name, func(t *testing.T) {
			orig := slices.Clone(g.data)
			want := binary.LittleEndian.Uint16(g.data[pdChecksum:])
			if got := PageChecksum((*[PageSize]byte)(g.data), g.blkno); got != want {
				t.Errorf("PageChecksum = %#04x, PostgreSQL stored %#04x", got, want)
			}
			if got := referencePageChecksum(g.data, g.blkno); got != want {
				t.Errorf("reference checksum = %#04x, PostgreSQL stored %#04x", got, want)
			}
			if !bytes.Equal(g.data, orig) {
				t.Error("PageChecksum modified the page")
			}
		})
	}
}

func TestPageChecksumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	page := make([]byte, PageSize)
	for range 200 {
		for i := range page {
			page[i] = byte(rng.Uint32())
		}
		blkno := rng.Uint32()
		if got, want := PageChecksum((*[PageSize]byte)(page), blkno), referencePageChecksum(page, blkno); got != want {
			t.Fatalf("block %d: PageChecksum = %#04x, reference %#04x", blkno, got, want)
		}
	}
}

func TestCheckPages(t *testing.T) {
	const allChecked = math.MaxUint64
	for _, g := range goldenPages(t) {
		corrupt := func() []byte {
			p := slices.Clone(g.data)
			p[4000] ^= 0x40
			return p
		}
		tests := []struct {
			name       string
			data       []byte
			firstBlock uint32
			startLSN   uint64
			want       []uint32
		}{
			{"as written", g.data, g.blkno, allChecked, nil},
			{"corrupt body", corrupt(), g.blkno, allChecked, []uint32{g.blkno}},
			{"wrong block", g.data, g.blkno + 1, allChecked, []uint32{g.blkno + 1}},
			{"corrupt, written at start LSN", corrupt(), g.blkno, g.lsn(), nil},
			{"corrupt, written after start LSN", corrupt(), g.blkno, g.lsn() - 1, nil},
			{"corrupt, written before start LSN", corrupt(), g.blkno, g.lsn() + 1, []uint32{g.blkno}},
			{"trailing partial page", append(corrupt(), g.data[:PageSize-1]...), g.blkno, allChecked, []uint32{g.blkno}},
			{"partial page only", g.data[:PageSize/2], g.blkno, allChecked, nil},
			{"empty", nil, g.blkno, allChecked, nil},
		}
		if g.isNew() {
			// No checksum to verify, so nothing is ever reported.
			for i := range tests {
				tests[i].want = nil
			}
		}
		for _, tt := range tests {
			t.Run(g.name+"/"+tt.name, func(t *testing.T) {
				if got := badPages(tt.data, tt.firstBlock, pglogrepl.LSN(tt.startLSN)); !slices.Equal(got, tt.want) {
					t.Errorf("badPages = %v, want %v", got, tt.want)
				}
			})
		}
	}
}

func TestCheckPagesNewPageWithGarbage(t *testing.T) {
	// PostgreSQL 15's base backup skips any page with pd_upper == 0 without
	// looking at the rest of it; so must we, or we would report pages the
	// server itself accepts.
	page := make([]byte, PageSize)
	for i := range page {
		page[i] = byte(i*7 + 3)
	}
	page[pdUpper], page[pdUpper+1] = 0, 0
	page[pdLSNHi], page[pdLSNHi+1], page[pdLSNHi+2], page[pdLSNHi+3] = 0, 0, 0, 0
	if got := badPages(page, 9, math.MaxUint64); got != nil {
		t.Errorf("badPages = %v, want nil", got)
	}
}

func TestCheckPagesRun(t *testing.T) {
	// A run of pages as one read of a segment file hands them over: block
	// numbers count up from firstBlock, only the damaged pages are reported.
	pages := checkedGoldenPages(t)
	const firstBlock = 131072 // block 0 of the relation's second segment
	var data []byte
	var want []uint32
	for i := range 8 {
		g := pages[i%len(pages)]
		p := slices.Clone(g.data)
		blkno := firstBlock + uint32(i)
		binary.LittleEndian.PutUint16(p[pdChecksum:], PageChecksum((*[PageSize]byte)(p), blkno))
		if i == 2 || i == 5 {
			p[PageSize-1] ^= 1
			want = append(want, blkno)
		}
		data = append(data, p...)
	}
	if got := badPages(data, firstBlock, math.MaxUint64); !slices.Equal(got, want) {
		t.Errorf("badPages = %v, want %v", got, want)
	}
}

func TestCheckPagesDoesNotAllocate(t *testing.T) {
	// A golden page is valid only at its own block number; restamp each for
	// the place it takes in the run so that every page is clean.
	pages := checkedGoldenPages(t)
	var data []byte
	for i := range 16 {
		p := slices.Clone(pages[i%len(pages)].data)
		binary.LittleEndian.PutUint16(p[pdChecksum:], PageChecksum((*[PageSize]byte)(p), uint32(i)))
		data = append(data, p...)
	}
	var bad []uint32
	allocs := testing.AllocsPerRun(20, func() { bad = badPages(data, 0, math.MaxUint64) })
	if bad != nil {
		t.Fatalf("badPages = %v, want nil", bad)
	}
	if allocs != 0 {
		t.Errorf("badPages allocated %v times over clean pages", allocs)
	}
}

// FuzzBadPages compares badPages with referenceBadPages on arbitrary bytes.
// Every input that adds coverage is a page or more long, and the fuzzer's
// minimizer is quadratic in input length, so it spends its whole default
// minute on each one; explore with -fuzzminimizetime=1s or less. The seeds
// reach every branch (and runs of up to four pages) so that few new inputs
// turn up.
func FuzzBadPages(f *testing.F) {
	const allChecked = uint64(math.MaxUint64)
	var run []byte
	for _, g := range goldenPages(f) {
		corrupt := slices.Clone(g.data)
		corrupt[4000] ^= 0x40
		f.Add(g.data, g.blkno, allChecked)
		f.Add(g.data, g.blkno, g.lsn())
		f.Add(corrupt, g.blkno, allChecked)
		f.Add(g.data[:PageSize-100], g.blkno, allChecked)
		run = append(run, corrupt...)
		f.Add(slices.Clone(run), g.blkno, allChecked)
	}
	pages := checkedGoldenPages(f)
	two := append(slices.Clone(pages[0].data), pages[len(pages)-1].data...)
	f.Add(two, uint32(math.MaxUint32), allChecked)
	f.Fuzz(func(t *testing.T, data []byte, firstBlock uint32, startLSN uint64) {
		orig := slices.Clone(data)
		got := badPages(data, firstBlock, pglogrepl.LSN(startLSN))
		if !bytes.Equal(data, orig) {
			t.Fatal("badPages modified its input")
		}
		n := uint32(len(data) / PageSize)
		for i, b := range got {
			// Offsets, not block numbers, so that a run wrapping past
			// 2^32-1 is judged as PostgreSQL would number it.
			if off := b - firstBlock; off >= n {
				t.Fatalf("block %d reported, data holds blocks %d to %d", b, firstBlock, firstBlock+n-1)
			}
			if i > 0 && b-firstBlock <= got[i-1]-firstBlock {
				t.Fatalf("blocks reported out of order: %v", got)
			}
		}
		if want := referenceBadPages(data, firstBlock, startLSN); !slices.Equal(got, want) {
			t.Fatalf("badPages = %v, reference implementation says %v", got, want)
		}
	})
}

var benchChecksum uint16

func BenchmarkPageChecksum(b *testing.B) {
	page := checkedGoldenPages(b)[0]
	b.SetBytes(PageSize)
	for b.Loop() {
		benchChecksum = PageChecksum((*[PageSize]byte)(page.data), page.blkno)
	}
}
