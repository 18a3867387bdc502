package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pgvault/pgvault/chunk"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/index"
	"github.com/pgvault/pgvault/repo/pack"
)

// Options tune an open repository. The zero value is usable.
type Options struct {
	// CacheDir holds decrypted index tables (memory-mapped so index memory
	// stays off the heap). Empty keeps everything in memory.
	CacheDir string
	// CacheSize bounds the in-memory cache of decrypted blobs (bytes).
	CacheSize int64
	// Uploaders is how many packs upload at once.
	Uploaders int
	// CompressionLevel is the zstd level (1..19); 0 means chunk.DefaultLevel.
	CompressionLevel int
	// PackSize is where packs are closed; 0 means pack.TargetSize.
	PackSize int
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
	// Now is the clock (tests inject one); nil means time.Now.
	Now func() time.Time
	// SkipIndex opens without reading the index, for RebuildIndex when the
	// index itself is damaged. Nothing else works on such a repository.
	SkipIndex bool
	// ConcurrentWriter is for writers that run while prune may run (WAL
	// streaming and archiving, under a LockConcurrent lock): SaveBlob then
	// reuses only blobs this process stored within ReuseWindow, never
	// other blobs of the repository, which prune may be deleting.
	ConcurrentWriter bool
	// KeyCache, if set, keeps the key derived from the password (see
	// KeyCache); nil runs the KDF at every open.
	KeyCache KeyCache
	// ReuseWindow bounds how old an own blob a concurrent writer reuses;
	// 0 means DefaultReuseWindow. It must stay well below prune's grace.
	ReuseWindow time.Duration
}

// DefaultReuseWindow and DefaultPruneGrace keep concurrent writers and
// prune apart: prune never touches a pack younger than its grace, and a
// concurrent writer never reuses a blob older than the window.
const (
	DefaultReuseWindow = 15 * time.Minute
	DefaultPruneGrace  = time.Hour
)

func (o *Options) fill() {
	if o.CacheSize == 0 {
		o.CacheSize = 256 << 20
	}
	if o.Uploaders == 0 {
		o.Uploaders = 3
	}
	if o.PackSize == 0 {
		o.PackSize = pack.TargetSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ReuseWindow <= 0 {
		o.ReuseWindow = DefaultReuseWindow
	}
}

// InitOptions configure a new repository.
type InitOptions struct {
	Password []byte
	// NoEncryption creates a plaintext repository (integrity is still
	// checked with keyed checksums). Only with --insecure-no-encryption.
	NoEncryption bool
	// KDF overrides the key derivation cost; zero means DefaultKDF.
	KDF KDFParams
	// ChunkSize is the fixed chunk size for page files; 0 means
	// chunk.DefaultFixedSize.
	ChunkSize int
	// KeyCache, if set, receives the key derived from the password, as
	// an Open would cache it: the first command after init then skips
	// the KDF (a wal push right after setup, a first backup).
	KeyCache KeyCache
}

// Repository is an open repository. Its methods are safe for concurrent
// use; Close it when done.
type Repository struct {
	be     backend.Backend
	cfg    Config
	opts   Options
	log    *slog.Logger
	codec  *chunk.Codec
	hasher *chunk.Hasher
	pol    chunk.Pol
	idx    *masterIndex
	cache  *blobCache
	// master is the key the password opened, from key file keyName
	// (repo key manages the others with it).
	master  *masterKey
	keyName string

	// bgCtx outlives any one call: pack uploads started by one SaveBlob
	// finish even if that caller's context ends.
	bgCtx    context.Context
	bgCancel context.CancelFunc

	saverOnce sync.Once
	saver     *saver
	sealBufs  sync.Pool
	closeOnce sync.Once
	closeErr  error
}

// Init creates a repository on be. It refuses a location that already has
// a repository config, or (where the store can list everything) holds
// any object at all.
func Init(ctx context.Context, be backend.Backend, opts InitOptions) (Config, error) {
	if _, err := be.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); err == nil {
		return Config{}, fmt.Errorf("%w at %s", ErrRepoExists, be.Location())
	} else if !errors.Is(err, backend.ErrNotFound) {
		return Config{}, fmt.Errorf("check for an existing repository: %w", err)
	}
	if err := checkEmpty(ctx, be); err != nil {
		return Config{}, err
	}
	if !opts.NoEncryption && len(opts.Password) == 0 {
		return Config{}, ErrNoPassword
	}
	kdf := opts.KDF
	if kdf == (KDFParams{}) {
		kdf = DefaultKDF()
	}
	size := opts.ChunkSize
	if size == 0 {
		size = chunk.DefaultFixedSize
	}
	var rid [16]byte
	rand.Read(rid[:])
	cfg := Config{
		Format: "pgvault", Version: FormatVersion, ID: hex.EncodeToString(rid[:]),
		Created: time.Now().UTC(), Encryption: "aes-256-gcm", ChunkSize: size,
	}
	if opts.NoEncryption {
		cfg.Encryption, cfg.Version = "none", oldFormatVersion
	}
	if _, err := ParseConfig(mustJSON(cfg)); err != nil {
		return Config{}, err
	}
	master, err := newMasterKey(cfg.SealsToPublicKey())
	if err != nil {
		return Config{}, err
	}
	kf, kek, err := wrapKey(master, opts.Password, !opts.NoEncryption, kdf)
	if err != nil {
		return Config{}, err
	}
	// The key goes first: a config without a key would be a repository no
	// one can open, while a key without a config is simply not a repository.
	keyName, err := saveKey(ctx, be, kf)
	if err != nil {
		return Config{}, err
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, mustJSON(cfg)); err != nil {
		return Config{}, fmt.Errorf("save config: %w", err)
	}
	if opts.KeyCache != nil && kek != nil {
		opts.KeyCache.Put(cfg.ID, keyName, kek)
	}
	return cfg, nil
}

// InitAndOpen creates a repository on be (Init) and opens it with the
// same password (Open): for callers that use the repository they create,
// such as repository test helpers.
func InitAndOpen(ctx context.Context, be backend.Backend, init InitOptions, opts Options) (*Repository, error) {
	if _, err := Init(ctx, be, init); err != nil {
		return nil, err
	}
	r, err := Open(ctx, be, init.Password, opts)
	if err != nil {
		return nil, fmt.Errorf("open the repository just created: %w", err)
	}
	return r, nil
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err)) // only for types of ours that always marshal
	}
	return b
}

// Open opens the repository on be with password and loads its index.
func Open(ctx context.Context, be backend.Backend, password []byte, opts Options) (*Repository, error) {
	opts.fill()
	data, err := be.Load(ctx, backend.Handle{Type: backend.ConfigFile}, 0, 0)
	if errors.Is(err, backend.ErrNotFound) {
		return nil, fmt.Errorf("%w at %s (no config object): check --repo, or create one with `pgvault repo init`", ErrNotRepository, be.Location())
	}
	if err != nil {
		return nil, fmt.Errorf("open repository at %s: %w", be.Location(), err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("repository at %s: %w", be.Location(), err)
	}
	cacheDir := ""
	if opts.CacheDir != "" {
		cacheDir = filepath.Join(opts.CacheDir, cfg.ID, "index")
		if err := os.MkdirAll(cacheDir, 0o700); err != nil {
			opts.Logger.Warn("cache folder unusable; keeping the index in memory", "dir", cacheDir, "err", err)
			cacheDir = ""
		}
	}
	// The codec comes with the key; fetching the index needs neither, so
	// it runs while the KDF derives the key (about 55 ms on a first open).
	idx := newMasterIndex(be, nil, cacheDir, opts.Logger)
	loadIndex := !opts.ConcurrentWriter && !opts.SkipIndex
	type fetchResult struct {
		f   *fetched
		err error
	}
	fetchCtx, cancelFetch := context.WithCancel(ctx)
	defer cancelFetch()
	fetchDone := make(chan fetchResult, 1)
	if loadIndex {
		go func() {
			f, err := idx.fetch(fetchCtx)
			fetchDone <- fetchResult{f, err}
		}()
	}
	master, keyName, err := findKey(ctx, be, password, cfg.Encrypted(), cfg.ID, opts.KeyCache)
	if err != nil {
		if loadIndex {
			cancelFetch()
			<-fetchDone
		}
		idx.close()
		return nil, err
	}
	r := &Repository{be: be, cfg: cfg, opts: opts, log: opts.Logger, pol: master.ChunkerPol, master: master, keyName: keyName}
	r.hasher = chunk.NewHasher(master.IDKey)
	copts := chunk.CodecOptions{Hasher: r.hasher, Level: opts.CompressionLevel}
	if cfg.Encrypted() {
		copts.EncKey = master.EncKey
	}
	if cfg.SealsToPublicKey() {
		if master.DataPub == nil {
			err = fmt.Errorf("%w: key %s of a format-2 repository has no data key", ErrNotRepository, keyName[:8])
		}
		copts.DataPublic, copts.DataPrivate = master.DataPub, master.DataKey
	}
	if err == nil {
		r.codec, err = chunk.NewCodec(copts)
	}
	if err != nil {
		if loadIndex {
			cancelFetch()
			<-fetchDone
		}
		idx.close()
		return nil, err
	}
	r.sealBufs.New = func() any { b := make([]byte, 0, chunk.MaxChunkSize+1024); return &b }
	r.cache = newBlobCache(opts.CacheSize)
	r.bgCtx, r.bgCancel = context.WithCancel(context.Background())
	idx.codec = r.codec
	r.idx = idx
	if opts.ConcurrentWriter {
		// It never looks blobs up (it reuses only its own), so the
		// repository's index is neither loaded nor kept.
		r.idx.retain = false
		return r, nil
	}
	if opts.SkipIndex {
		return r, nil
	}
	res := <-fetchDone
	err = res.err
	if err == nil {
		err = r.idx.open(ctx, res.f)
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// openBlob opens a sealed blob of type t: data blobs as the format has
// them sealed (to the public key in format 2), metadata with the
// repository key.
func (r *Repository) openBlob(dst []byte, t pack.BlobType, id chunk.ID, sealed []byte) ([]byte, error) {
	if t == pack.DataBlob {
		return r.codec.OpenData(dst, id, sealed)
	}
	return r.codec.Open(dst, id, sealed)
}

// sealBlob seals a blob of type t (see openBlob).
func (r *Repository) sealBlob(dst []byte, t pack.BlobType, id chunk.ID, plain []byte) ([]byte, error) {
	if t == pack.DataBlob {
		return r.codec.SealData(dst, id, plain)
	}
	return r.codec.Seal(dst, id, plain), nil
}

// WriteOnly reports whether the repository was opened with a write-only
// key: it stores backups and WAL but cannot read file or WAL contents.
func (r *Repository) WriteOnly() bool { return r.codec.WriteOnly() }

// Config returns the repository's config.
func (r *Repository) Config() Config { return r.cfg }

// Backend returns the storage the repository lives on.
func (r *Repository) Backend() backend.Backend { return r.be }

// Codec returns the blob codec (tests and check use it).
func (r *Repository) Codec() *chunk.Codec { return r.codec }

// ChunkerPol is the repository's CDC polynomial.
func (r *Repository) ChunkerPol() chunk.Pol { return r.pol }

// Now is the repository's clock.
func (r *Repository) Now() time.Time { return r.opts.Now() }

// Logger is where the repository logs.
func (r *Repository) Logger() *slog.Logger { return r.log }

// ReloadIndex reads index objects written by other processes since Open.
func (r *Repository) ReloadIndex(ctx context.Context) error { return r.idx.load(ctx) }

// HasBlob reports whether a blob is stored.
func (r *Repository) HasBlob(id chunk.ID) bool { return r.idx.Has(id) }

// LookupBlob returns where a blob is stored.
func (r *Repository) LookupBlob(id chunk.ID) (index.Entry, bool) { return r.idx.Lookup(id) }

// BlobID computes the ID data would be stored under.
func (r *Repository) BlobID(data []byte) chunk.ID { return r.hasher.ID(data) }

func (r *Repository) getSaver() *saver {
	r.saverOnce.Do(func() { r.saver = newSaver(r) })
	return r.saver
}

// SaveBlob queues data as a blob of type t and returns its ID and whether
// it was new. The blob is durable only after Flush returns.
func (r *Repository) SaveBlob(ctx context.Context, t pack.BlobType, data []byte) (chunk.ID, bool, error) {
	id := r.hasher.ID(data)
	isNew, err := r.getSaver().save(ctx, t, data, id)
	return id, isNew, err
}

// Flush makes every blob saved before it durable and indexed.
func (r *Repository) Flush(ctx context.Context) error {
	if r.saver == nil {
		return nil
	}
	return r.saver.flush(ctx)
}

// CompactIndex folds the index objects this process wrote into one (a
// backup calls it when it ends; long-running writers do it every few
// minutes by themselves).
func (r *Repository) CompactIndex(ctx context.Context) error {
	return r.idx.compactOwn(ctx)
}

// StoredBytes is the sealed size of the new blobs this process saved.
func (r *Repository) StoredBytes() int64 {
	if r.saver == nil {
		return 0
	}
	return r.saver.stored.Load()
}

// LoadBlob returns a blob's plaintext. The slice is shared with the cache:
// do not modify it. Damage is an error naming the pack and the blob.
func (r *Repository) LoadBlob(ctx context.Context, id chunk.ID) ([]byte, error) {
	return r.cache.get(ctx, id, func() ([]byte, error) { return r.loadBlob(ctx, id, nil) })
}

// CachedBlob returns a blob's plaintext if the cache holds it, without
// loading anything. The slice is shared with the cache: do not modify it.
func (r *Repository) CachedBlob(id chunk.ID) ([]byte, bool) {
	return r.cache.peek(id)
}

// ReadBlob returns a blob's plaintext in dst (reused when large enough)
// without adding it to the cache: for reads that touch every chunk once
// (restore, verify), which would only evict what interactive readers need.
func (r *Repository) ReadBlob(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	if data, ok := r.cache.peek(id); ok {
		return append(dst[:0], data...), nil
	}
	return r.loadBlob(ctx, id, dst)
}

// loadBlob reads, authenticates and decompresses a blob into dst.
func (r *Repository) loadBlob(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	var plain []byte
	err := readAuthentic(ctx, r.log, "blob "+id.Short(), func(ctx context.Context) (err error) {
		plain, err = r.loadBlobOnce(ctx, id, dst)
		return err
	})
	return plain, err
}

func (r *Repository) loadBlobOnce(ctx context.Context, id chunk.ID, dst []byte) ([]byte, error) {
	e, ok := r.idx.Lookup(id)
	if !ok {
		// Another process (a WAL streamer, archive_command) may have
		// stored it since this one read the index: a mount serving WAL
		// reads catalogue entries written after it opened. Read the new
		// index objects before calling it missing.
		if rerr := r.idx.load(ctx); rerr == nil {
			e, ok = r.idx.Lookup(id)
		}
		if !ok {
			return nil, fmt.Errorf("blob %s: %w", id.Short(), ErrBlobNotFound)
		}
	}
	h := backend.Handle{Type: backend.PackFile, Name: e.Pack.String()}
	sealed, err := r.be.Load(ctx, h, int64(e.Offset), int64(e.Length))
	if errors.Is(err, backend.ErrNotFound) {
		// Prune may have repacked the blob since we read the index: read
		// the new index objects and try where they say it is now.
		if rerr := r.idx.load(ctx); rerr == nil {
			if e2, ok := r.idx.Lookup(id); ok && e2.Pack != e.Pack {
				e, h = e2, backend.Handle{Type: backend.PackFile, Name: e2.Pack.String()}
				sealed, err = r.be.Load(ctx, h, int64(e.Offset), int64(e.Length))
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load blob %s from pack %s: %w", id.Short(), e.Pack.Short(), err)
	}
	if cap(dst) < int(e.PlainLen) {
		dst = make([]byte, 0, e.PlainLen)
	}
	plain, err := r.openBlob(dst[:0], e.Type, id, sealed)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", e.Pack.Short(), err)
	}
	return plain, nil
}

// Close flushes nothing: call Flush first to keep unsaved blobs. It stops
// background uploads and releases the index maps.
// Close may be called more than once.
func (r *Repository) Close() error {
	r.closeOnce.Do(func() {
		if r.saver != nil {
			r.saver.close()
		}
		if r.bgCancel != nil {
			r.bgCancel()
		}
		if r.idx != nil {
			r.idx.close()
		}
		r.closeErr = r.be.Close()
	})
	return r.closeErr
}

// checkEmpty refuses a location that holds anything: a repository created
// inside a PostgreSQL data directory (or another tool's backups) would mix
// with files it does not own, and be copied, deleted or pruned with them.
func checkEmpty(ctx context.Context, be backend.Backend) error {
	inv, ok := backend.InventoryOf(be)
	if !ok {
		return nil
	}
	var found []string
	errEnough := errors.New("enough")
	err := inv.ListAll(ctx, func(name string) error {
		found = append(found, name)
		if len(found) == 3 {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return fmt.Errorf("check that %s is empty: %w", be.Location(), err)
	}
	if len(found) > 0 {
		return fmt.Errorf("%w: %s holds %s: create the repository in an empty folder or prefix", ErrNotEmpty, be.Location(), strings.Join(found, ", "))
	}
	return nil
}
