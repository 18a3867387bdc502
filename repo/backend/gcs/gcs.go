package gcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/auth/httptransport"
	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/pgvault/pgvault/repo/backend"
)

// DefaultChunkSize is the largest object Save uploads in one request, and
// the part size of the resumable upload above it. It matches the pack
// target (~16 MiB), so a typical pack is one request; every concurrent
// upload of a larger object holds one part in memory.
const DefaultChunkSize = 16 << 20

// Timeouts of the HTTP transport, as the S3 backend has them: a server
// that accepts a request and then says nothing must not wedge a call
// forever (the caller may have no deadline).
const (
	dialTimeout   = 10 * time.Second
	headerTimeout = 2 * time.Minute
	// idleTimeout ends a download whose body stops arriving.
	idleTimeout = 2 * time.Minute
)

// Options configure the backend.
type Options struct {
	Bucket string
	// Prefix is the object name prefix under which the repository lives (no
	// leading or trailing slash needed); empty means the bucket root.
	Prefix string
	// Endpoint is an emulator's URL, e.g. "http://127.0.0.1:4443"; a host
	// and port without a scheme mean http. Requests to it carry no
	// credentials. Empty means STORAGE_EMULATOR_HOST when that is set (as
	// the library reads it), else Google Cloud Storage with Application
	// Default Credentials.
	Endpoint string
	// Project is the Google Cloud project a bucket is created in by
	// EnsureBucket. Empty means GOOGLE_CLOUD_PROJECT, else the project of
	// the credentials.
	Project string
	// ChunkSize: see DefaultChunkSize (used when zero). Rounded up to a
	// multiple of 256 KiB, as GCS requires of resumable upload parts.
	ChunkSize int
}

// Backend is a repository in a GCS bucket.
type Backend struct {
	client    *storage.Client
	bucket    *storage.BucketHandle
	name      string // bucket name
	prefix    string // "" or "some/prefix/"
	endpoint  string // emulator, for messages; "" for Google
	project   string
	chunkSize int
}

var _ backend.Backend = (*Backend)(nil)
var _ backend.Inventory = (*Backend)(nil)

// emulatorHostEnv is the variable cloud.google.com/go/storage reads to talk
// to an emulator without credentials.
const emulatorHostEnv = "STORAGE_EMULATOR_HOST"

// New configures a client. It sends no request to the store, so a missing
// bucket or a refused credential shows on the first call; finding the
// default credentials may read their file or ask the metadata server.
func New(ctx context.Context, opts Options) (*Backend, error) {
	if opts.Bucket == "" {
		return nil, backend.Permanent(errors.New("gcs: no bucket given"))
	}
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv(emulatorHostEnv)
	}
	if endpoint != "" {
		e, err := normalizeEndpoint(endpoint)
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("gcs: %w", err))
		}
		endpoint = e
	}
	chunk := opts.ChunkSize
	if chunk <= 0 {
		chunk = DefaultChunkSize
	}
	const unit = 256 << 10
	chunk = (chunk + unit - 1) / unit * unit

	base := newTransport()
	var clientOpts []option.ClientOption
	project := opts.Project
	if project == "" {
		project = os.Getenv("GOOGLE_CLOUD_PROJECT")
	}
	if endpoint != "" {
		clientOpts = append(clientOpts,
			option.WithHTTPClient(&http.Client{Transport: base}),
			option.WithEndpoint(endpoint+"/storage/v1/"),
			option.WithoutAuthentication())
	} else {
		creds, err := credentials.DetectDefault(&credentials.DetectOptions{
			Scopes: []string{storage.ScopeReadWrite},
		})
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("no Google Cloud credentials for gs://%s: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run `gcloud auth application-default login` (%v)",
				opts.Bucket, err))
		}
		hc, err := httptransport.NewClient(&httptransport.Options{Credentials: creds, BaseRoundTripper: base})
		if err != nil {
			return nil, backend.Permanent(fmt.Errorf("gcs: set up authenticated transport: %w", err))
		}
		clientOpts = append(clientOpts, option.WithHTTPClient(hc))
		if project == "" {
			// Best effort: only EnsureBucket needs it, and says so.
			project, _ = creds.ProjectID(ctx)
		}
	}
	client, err := storage.NewClient(ctx, clientOpts...)
	if err != nil {
		return nil, backend.Permanent(fmt.Errorf("gcs: create client: %w", err))
	}
	// Package retry retries, with one policy for every backend.
	client.SetRetry(storage.WithPolicy(storage.RetryNever))

	prefix := strings.Trim(opts.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &Backend{
		client:    client,
		bucket:    client.Bucket(opts.Bucket),
		name:      opts.Bucket,
		prefix:    prefix,
		endpoint:  endpoint,
		project:   project,
		chunkSize: chunk,
	}, nil
}

// normalizeEndpoint turns "host:port" into "http://host:port" (as the
// library does with STORAGE_EMULATOR_HOST) and checks the URL.
func normalizeEndpoint(e string) (string, error) {
	raw := e
	if !strings.Contains(e, "://") {
		e = "http://" + e
	}
	u, err := url.Parse(e)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return "", fmt.Errorf("bad endpoint %q: want http://host:port or https://host", raw)
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = dialTimeout
	t.ResponseHeaderTimeout = headerTimeout
	t.MaxIdleConnsPerHost = 32
	return t
}

// Location is gs://bucket/prefix, followed by the endpoint of an emulator.
func (b *Backend) Location() string {
	loc := "gs://" + b.name
	if b.prefix != "" {
		loc += "/" + strings.TrimSuffix(b.prefix, "/")
	}
	if b.endpoint != "" {
		loc += " (" + b.endpoint + ")"
	}
	return loc
}

func (b *Backend) object(h backend.Handle) *storage.ObjectHandle {
	return b.bucket.Object(b.prefix + h.Path())
}

func (b *Backend) server() string {
	if b.endpoint != "" {
		return b.endpoint
	}
	return "Google Cloud Storage"
}

// libError keeps the library's error in the chain (errors.Is/As) under a
// short message: its own text can repeat response bodies and URLs.
type libError struct {
	msg string
	err error
}

func (e *libError) Error() string { return e.msg }
func (e *libError) Unwrap() error { return e.err }

func wrap(err error, format string, args ...any) error {
	return &libError{msg: fmt.Sprintf(format, args...), err: err}
}

// errStalled cancels a download whose body stopped arriving.
var errStalled = errors.New("no data received for " + idleTimeout.String())

// detail is the useful part of an error: the API's status and message, or
// the network error.
func detail(err error) string {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		msg := ge.Message
		if msg == "" {
			msg = http.StatusText(ge.Code)
		}
		return fmt.Sprintf("HTTP %d %s", ge.Code, msg)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		// The token endpoint's body can echo request details: keep its status.
		return "token request answered HTTP " + ae.Response.Status
	}
	return err.Error()
}

// translate turns a library error into the backend's vocabulary:
// ErrNotFound, permanent errors with a clear message, or a transient error.
func (b *Backend) translate(ctx context.Context, op string, h backend.Handle, err error) error {
	what := op
	if h.Type != 0 {
		what += " " + h.String()
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("gcs %s: %w", what, cerr)
	}
	if errors.Is(err, errStalled) {
		return fmt.Errorf("GCS endpoint %s stalled: %s: %v", b.server(), what, errStalled)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// An internal timeout (the caller's ctx is fine): transient, so
		// keep context errors out of the chain (they read as permanent).
		return fmt.Errorf("GCS endpoint %s timed out: %s: %s", b.server(), what, detail(err))
	}
	code := 0
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		code = ge.Code
	}
	var ae *auth.Error
	authStatus := 0
	if errors.As(err, &ae) && ae.Response != nil {
		authStatus = ae.Response.StatusCode
	}
	switch {
	case errors.Is(err, storage.ErrBucketNotExist) || (code == http.StatusNotFound && (op == "save" || op == "list")):
		// An upload or a listing answers 404 only for a missing bucket.
		return backend.Permanent(wrap(err, "GCS bucket %q does not exist at %s: create it (pgvault repo init does) (%s)",
			b.name, b.server(), what))
	case errors.Is(err, storage.ErrObjectNotExist) || code == http.StatusNotFound:
		return fmt.Errorf("gcs %s: %w", what, backend.ErrNotFound)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return backend.Permanent(wrap(err, "GCS access denied for bucket %q at %s: check the credentials (GOOGLE_APPLICATION_CREDENTIALS) and that the account may read and write objects in the bucket (%s: %s)",
			b.name, b.server(), what, detail(err)))
	case authStatus >= 400 && authStatus < 500:
		return backend.Permanent(wrap(err, "Google credentials refused for bucket %q: check GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login` (%s: %s)",
			b.name, what, detail(err)))
	case code == http.StatusBadRequest:
		return backend.Permanent(wrap(err, "GCS rejects the request for bucket %q at %s as invalid (%s: %s)", b.name, b.server(), what, detail(err)))
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return wrap(err, "GCS endpoint %s unreachable: %s: %s", b.server(), what, detail(err))
	}
	return wrap(err, "gcs %s: %s", what, detail(err))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Cancelling wctx aborts the upload; Close then waits for the library
	// to stop using data.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.object(h).NewWriter(wctx)
	w.ContentType = "application/octet-stream"
	w.CRC32C = crc32.Checksum(data, castagnoli)
	w.SendCRC32C = true
	if len(data) <= b.chunkSize {
		w.ChunkSize = 0 // one request, nothing buffered
	} else {
		w.ChunkSize = b.chunkSize
	}
	if _, err := w.Write(data); err != nil {
		cancel()
		_ = w.Close()
		return b.translate(ctx, "save", h, err)
	}
	if err := w.Close(); err != nil {
		return b.translate(ctx, "save", h, err)
	}
	return nil
}

// idleReader ends a read whose data stopped arriving: each Read re-arms
// the timer that cancels the download's context.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
}

func (i *idleReader) Read(p []byte) (int, error) {
	i.timer.Reset(idleTimeout)
	return i.r.Read(p)
}

func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("gcs load %v at %d+%d: %w", h, offset, length, backend.ErrShortRead)
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(idleTimeout, func() { cancel(errStalled) })
	defer timer.Stop()
	n := length
	if n == 0 {
		n = -1 // to the end
	}
	r, err := b.object(h).NewRangeReader(rctx, offset, n)
	if err != nil {
		var ge *googleapi.Error
		if errors.As(err, &ge) && ge.Code == http.StatusRequestedRangeNotSatisfiable {
			return b.invalidRange(ctx, h, offset, length)
		}
		return nil, b.translate(ctx, "load", h, stalled(rctx, err))
	}
	defer r.Close()
	want := length
	if want == 0 {
		want = r.Attrs.Size - offset
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(want, 0)))
	if _, err := buf.ReadFrom(&idleReader{r: r, timer: timer}); err != nil {
		return nil, b.translate(ctx, "load", h, stalled(rctx, fmt.Errorf("read body: %w", err)))
	}
	if got := int64(buf.Len()); got != want {
		return nil, fmt.Errorf("gcs load %v at %d+%d: got %d bytes: %w", h, offset, length, got, backend.ErrShortRead)
	}
	return buf.Bytes(), nil
}

// stalled puts errStalled in the chain when the idle timer ended the read.
func stalled(rctx context.Context, err error) error {
	if errors.Is(context.Cause(rctx), errStalled) {
		return fmt.Errorf("%w (%v)", errStalled, err)
	}
	return err
}

// invalidRange handles GCS's 416 answer: a range starting at the very end
// of the object, "to the end", is empty; anything else is a short read.
func (b *Backend) invalidRange(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	fi, err := b.Stat(ctx, h)
	if err != nil {
		return nil, err
	}
	if length == 0 && offset == fi.Size {
		return []byte{}, nil
	}
	return nil, fmt.Errorf("gcs load %v at %d+%d of %d bytes: %w", h, offset, length, fi.Size, backend.ErrShortRead)
}

func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	attrs, err := b.object(h).Attrs(ctx)
	if err != nil {
		return backend.FileInfo{}, b.translate(ctx, "stat", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: attrs.Size, ModTime: attrs.Updated}, nil
}

// Remove deletes the object; GCS answers 404 for a missing one.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.object(h).Delete(ctx); err != nil {
		return b.translate(ctx, "remove", h, err)
	}
	return nil
}

// objects calls fn with every object whose name starts with prefix.
func (b *Backend) objects(ctx context.Context, h backend.Handle, prefix string, fn func(*storage.ObjectAttrs) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q := &storage.Query{Prefix: prefix}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Updated"}); err != nil {
		return fmt.Errorf("gcs list: %w", err)
	}
	it := b.bucket.Objects(ctx, q)
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return b.translate(ctx, "list", h, err)
		}
		if err := fn(attrs); err != nil {
			return err
		}
	}
}

func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t == backend.ConfigFile {
		return backend.ListConfig(ctx, b.Stat, fn)
	}
	dir := b.prefix + backend.Dir(t) + "/"
	return b.objects(ctx, backend.Handle{Type: t, Name: "*"}, dir, func(a *storage.ObjectAttrs) error {
		name, ok := nameFromKey(t, strings.TrimPrefix(a.Name, dir))
		if !ok {
			return nil
		}
		return fn(backend.FileInfo{Name: name, Size: a.Size, ModTime: a.Updated})
	})
}

// ListAll lists every object under the prefix (backend.Inventory).
func (b *Backend) ListAll(ctx context.Context, fn func(name string) error) error {
	return b.objects(ctx, backend.Handle{}, b.prefix, func(a *storage.ObjectAttrs) error {
		if strings.HasSuffix(a.Name, "/") {
			return nil // a folder placeholder the console creates
		}
		return fn(strings.TrimPrefix(a.Name, b.prefix))
	})
}

// nameFromKey turns an object name relative to the type's folder into a
// handle name; names that no handle of type t could produce are skipped.
func nameFromKey(t backend.FileType, rel string) (string, bool) {
	if rel == "" {
		return "", false
	}
	name := rel
	if t == backend.PackFile {
		name = path.Base(rel)
	}
	h := backend.Handle{Type: t, Name: name}
	if h.Valid() != nil || h.Path() != backend.Dir(t)+"/"+rel {
		return "", false
	}
	return name, true
}

// EnsureBucket creates the bucket if it does not exist yet (for repo
// init), in Options.Project.
func (b *Backend) EnsureBucket(ctx context.Context) error {
	_, err := b.bucket.Attrs(ctx)
	if err == nil {
		return nil
	}
	if !errors.Is(err, storage.ErrBucketNotExist) {
		return b.translate(ctx, "check bucket", backend.Handle{}, err)
	}
	if b.project == "" {
		return backend.Permanent(fmt.Errorf("GCS bucket %q does not exist at %s: create it, or give the project to create it in (?project=ID in the URL, or GOOGLE_CLOUD_PROJECT)",
			b.name, b.server()))
	}
	err = b.bucket.Create(ctx, b.project, nil)
	var ge *googleapi.Error
	if err != nil && !(errors.As(err, &ge) && ge.Code == http.StatusConflict) {
		return b.translate(ctx, "create bucket", backend.Handle{}, fmt.Errorf("create bucket %q: %w", b.name, err))
	}
	return nil
}

// Close releases the client's idle connections.
func (b *Backend) Close() error {
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("gcs: close client: %w", err)
	}
	return nil
}
