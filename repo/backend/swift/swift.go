package swift

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/repo/backend"
)

// Options configure the backend. Every credential field left empty is
// taken from the environment as swift.Connection.ApplyEnvironment reads
// it (OS_* for Keystone, ST_AUTH/ST_USER/ST_KEY for v1 auth).
type Options struct {
	Container string
	// Prefix is the object-name prefix under which the repository lives (no
	// leading or trailing slash needed); empty means the container root.
	Prefix string

	AuthURL     string // OS_AUTH_URL or ST_AUTH
	User        string // OS_USERNAME or ST_USER
	Key         string // OS_PASSWORD or ST_KEY
	AuthVersion int    // 1, 2 or 3; 0 guesses from AuthURL (ST_AUTH_VERSION)
	Project     string // OS_PROJECT_NAME (v3) or OS_TENANT_NAME (v2)
	UserDomain  string // OS_USER_DOMAIN_NAME
	// ProjectDomain is OS_PROJECT_DOMAIN_NAME, when it differs from the
	// user's domain.
	ProjectDomain string
	Region        string // OS_REGION_NAME; empty takes the catalogue's first
	// StorageURL and AuthToken skip authentication: a token got elsewhere
	// (OS_STORAGE_URL, OS_AUTH_TOKEN). Without AuthURL it cannot be
	// renewed when it expires.
	StorageURL string
	AuthToken  string

	// PageSize is how many names one listing request asks for; 0 means
	// 1000. Tests make it small to exercise paging.
	PageSize int
	// Timeout bounds the wait for a response and any pause in a transfer
	// (not a whole transfer); 0 means 2 minutes.
	Timeout time.Duration
}

// Backend is a repository in a Swift container.
type Backend struct {
	conn      *swift.Connection
	transport *http.Transport
	container string
	prefix    string // "" or "some/prefix/"
	pageSize  int
	server    string   // the auth URL, for messages
	preauth   bool     // a given token and no auth URL: nothing to renew it with
	secrets   []string // values no message may show
}

var _ backend.Backend = (*Backend)(nil)
var _ backend.Inventory = (*Backend)(nil)

// New configures a connection; it does no I/O, so bad credentials or a
// missing container show on the first call.
func New(opts Options) (*Backend, error) {
	if opts.Container == "" {
		return nil, backend.Permanent(errors.New("swift: no container given"))
	}
	if strings.Contains(opts.Container, "/") {
		return nil, backend.Permanent(fmt.Errorf("swift: container name %q contains a slash", opts.Container))
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	// Our own transport: bounded dials and header waits, so a server that
	// accepts a connection and then says nothing cannot wedge a call whose
	// caller set no deadline.
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   32,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: 5 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
	}
	conn := &swift.Connection{
		AuthUrl:      opts.AuthURL,
		UserName:     opts.User,
		ApiKey:       opts.Key,
		AuthVersion:  opts.AuthVersion,
		Tenant:       opts.Project,
		Domain:       opts.UserDomain,
		TenantDomain: opts.ProjectDomain,
		Region:       opts.Region,
		StorageUrl:   opts.StorageURL,
		AuthToken:    opts.AuthToken,
		// One retry only: it is what renews an expired token on a 401.
		// Every other retry is package retry's.
		Retries:        1,
		ConnectTimeout: timeout,
		Timeout:        timeout,
		Transport:      tr,
		UserAgent:      "pgvault",
	}
	if err := conn.ApplyEnvironment(); err != nil {
		return nil, backend.Permanent(fmt.Errorf("swift: read the OS_*/ST_* environment: %w", err))
	}
	if conn.AuthUrl == "" && (conn.StorageUrl == "" || conn.AuthToken == "") {
		return nil, backend.Permanent(errors.New("swift: no credentials: set OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME (Keystone), or ST_AUTH, ST_USER and ST_KEY (v1 auth)"))
	}
	pageSize := opts.PageSize
	if pageSize <= 0 {
		pageSize = 1000
	}
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	server := conn.AuthUrl
	if server == "" {
		server = conn.StorageUrl
	}
	var secrets []string
	for _, s := range []string{conn.ApiKey, conn.AuthToken, conn.ApplicationCredentialSecret} {
		if s != "" {
			secrets = append(secrets, s)
		}
	}
	return &Backend{
		conn:      conn,
		transport: tr,
		container: opts.Container,
		prefix:    prefix,
		pageSize:  pageSize,
		server:    redact.URL(server),
		preauth:   conn.AuthUrl == "",
		secrets:   secrets,
	}, nil
}

// Location is swift://container/prefix followed by the auth URL.
func (b *Backend) Location() string {
	loc := "swift://" + b.container
	if b.prefix != "" {
		loc += "/" + strings.TrimSuffix(b.prefix, "/")
	}
	return loc + " (" + b.server + ")"
}

func (b *Backend) name(h backend.Handle) string { return b.prefix + h.Path() }

// libError keeps the library's error in the chain (errors.Is/As) under a
// message of our own that shows no secret.
type libError struct {
	msg string
	err error
}

func (e *libError) Error() string { return e.msg }
func (e *libError) Unwrap() error { return e.err }

// scrub removes every credential value from s: a server may echo a
// request, and a token is a credential too.
func (b *Backend) scrub(s string) string {
	for _, sec := range b.secrets {
		s = strings.ReplaceAll(s, sec, "xxxxx")
	}
	return redact.Text(s)
}

func (b *Backend) wrap(err error, format string, args ...any) error {
	return &libError{msg: b.scrub(fmt.Sprintf(format, args...)), err: err}
}

// detail is the useful part of a library error: the HTTP status and the
// server's text, or the network error.
func (b *Backend) detail(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	msg := err.Error()
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return strings.Join(strings.Fields(msg), " ")
}

func statusOf(err error) int {
	var se *swift.Error
	if errors.As(err, &se) {
		return se.StatusCode
	}
	return 0
}

// translate turns a library error into the backend's vocabulary:
// ErrNotFound, permanent errors with a clear message, or a transient error.
func (b *Backend) translate(ctx context.Context, op string, h backend.Handle, err error) error {
	what := op
	if h.Type != 0 {
		what += " " + h.String()
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("swift %s: %w", what, cerr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, swift.TimeoutError) {
		// An internal timeout (the caller's ctx is fine): transient, so
		// keep context errors out of the chain (they read as permanent).
		return b.wrap(nil, "Swift server %s timed out: %s: %s", b.server, what, b.detail(err))
	}
	status := statusOf(err)
	switch {
	case b.preauth && (status == http.StatusUnauthorized || strings.Contains(err.Error(), "Can't find AuthVersion")):
		// The library answers a refused token by authenticating again,
		// which without an auth URL fails on the version.
		return backend.Permanent(b.wrap(err, "Swift at %s refused the token (OS_AUTH_TOKEN): it is wrong or expired; set OS_AUTH_URL and credentials so that pgvault authenticates itself (%s)",
			b.server, what))
	case errors.Is(err, swift.ContainerNotFound):
		return backend.Permanent(b.wrap(err, "Swift container %q does not exist at %s: create it (pgvault repo init does) (%s)",
			b.container, b.server, what))
	case status == http.StatusNotFound:
		return fmt.Errorf("swift %s: %w", what, backend.ErrNotFound)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return backend.Permanent(b.wrap(err, "Swift access denied for container %q at %s: check the credentials (OS_USERNAME/OS_PASSWORD/OS_PROJECT_NAME, or ST_USER/ST_KEY) and the container's ACL (%s: %s)",
			b.container, b.server, what, b.detail(err)))
	case status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge:
		// The same request can only be refused again.
		return backend.Permanent(b.wrap(err, "swift %s refused by %s: HTTP %d: %s", what, b.server, status, b.detail(err)))
	case strings.Contains(err.Error(), "Can't find AuthVersion") || strings.Contains(err.Error(), "Auth Version"):
		return backend.Permanent(b.wrap(err, "Swift auth URL %s: cannot tell the auth version: set ST_AUTH_VERSION (1, 2 or 3) or use a URL ending in /v1.0 or /v3", b.server))
	case status == 0 && strings.Contains(err.Error(), "Response didn't have storage url"):
		return backend.Permanent(b.wrap(err, "Swift authentication at %s gave no object-store endpoint: check OS_REGION_NAME and that the project has Swift (%s)", b.server, b.detail(err)))
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return b.wrap(err, "Swift server %s unreachable: %s: %s", b.server, what, b.detail(err))
	}
	if status != 0 {
		return b.wrap(err, "swift %s: HTTP %d: %s", what, status, b.detail(err))
	}
	return b.wrap(err, "swift %s: %s", what, b.detail(err))
}

// Save PUTs the object in one request with its length and MD5: the
// server refuses a body that does not match, and the body streams from
// data (a bytes.Reader, which the library rewinds to re-send after
// renewing an expired token).
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sum := md5.Sum(data)
	headers := swift.Headers{"Content-Length": strconv.Itoa(len(data))}
	_, err := b.conn.ObjectPut(ctx, b.container, b.name(h), bytes.NewReader(data), false,
		hex.EncodeToString(sum[:]), "application/octet-stream", headers)
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			// A PUT answered 404 means the container is missing.
			err = fmt.Errorf("%w: %w", swift.ContainerNotFound, err)
		}
		return b.translate(ctx, "save", h, err)
	}
	return nil
}

func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("swift load %v at %d+%d: %w", h, offset, length, backend.ErrShortRead)
	}
	var hdr swift.Headers
	switch {
	case length > 0:
		hdr = swift.Headers{"Range": fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)}
	case offset > 0:
		hdr = swift.Headers{"Range": fmt.Sprintf("bytes=%d-", offset)}
	}
	var f *swift.ObjectOpenFile
	var headers swift.Headers
	err := askAgainOn404(ctx, func() (err error) {
		f, headers, err = b.conn.ObjectOpen(ctx, b.container, b.name(h), false, hdr)
		return err
	})
	if err != nil {
		if statusOf(err) == http.StatusRequestedRangeNotSatisfiable {
			return b.invalidRange(ctx, h, offset, length)
		}
		return nil, b.translate(ctx, "load", h, err)
	}
	defer f.Close()
	want := int64(-1)
	if cl, err := strconv.ParseInt(headers["Content-Length"], 10, 64); err == nil {
		want = cl
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(length, want, 0)))
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, b.translate(ctx, "load", h, fmt.Errorf("read body: %w", err))
	}
	got := int64(buf.Len())
	if (length > 0 && got != length) || (want >= 0 && got != want) {
		return nil, fmt.Errorf("swift load %v at %d+%d: got %d bytes: %w", h, offset, length, got, backend.ErrShortRead)
	}
	if length == 0 && offset > 0 && headers["Content-Range"] == "" {
		// A server that ignored the range sent the whole object.
		return nil, fmt.Errorf("swift load %v at %d: the server ignored the range", h, offset)
	}
	return buf.Bytes(), nil
}

// invalidRange handles the 416 answer: a range starting at the very end of
// the object, "to the end", is empty; anything else is a short read.
func (b *Backend) invalidRange(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	fi, err := b.Stat(ctx, h)
	if err != nil {
		return nil, err
	}
	if length == 0 && offset == fi.Size {
		return []byte{}, nil
	}
	return nil, fmt.Errorf("swift load %v at %d+%d of %d bytes: %w", h, offset, length, fi.Size, backend.ErrShortRead)
}

func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	var obj swift.Object
	err := askAgainOn404(ctx, func() (err error) {
		obj, _, err = b.conn.Object(ctx, b.container, b.name(h))
		return err
	})
	if err != nil {
		return backend.FileInfo{}, b.translate(ctx, "stat", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: obj.Bytes, ModTime: obj.LastModified}, nil
}

// Remove deletes the object; Swift answers 404 for a missing one.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.conn.ObjectDelete(ctx, b.container, b.name(h)); err != nil {
		return b.translate(ctx, "remove", h, err)
	}
	return nil
}

// walk pages through the container listing of names starting with prefix
// (a marker per page: Swift returns at most PageSize names a request).
func (b *Backend) walk(ctx context.Context, op string, h backend.Handle, prefix string, fn func(swift.Object) error) error {
	marker := ""
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		objs, err := b.conn.Objects(ctx, b.container, &swift.ObjectsOpts{Prefix: prefix, Marker: marker, Limit: b.pageSize})
		if err != nil {
			return b.translate(ctx, op, h, err)
		}
		for _, o := range objs {
			if err := fn(o); err != nil {
				return err
			}
		}
		if len(objs) == 0 {
			return nil
		}
		marker = objs[len(objs)-1].Name
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
	h := backend.Handle{Type: t, Name: "*"}
	return b.walk(ctx, "list", h, dir, func(o swift.Object) error {
		name, ok := nameFromKey(t, strings.TrimPrefix(o.Name, dir))
		if !ok || o.PseudoDirectory {
			return nil
		}
		return fn(backend.FileInfo{Name: name, Size: o.Bytes, ModTime: o.LastModified})
	})
}

// ListAll lists every object under the prefix (backend.Inventory).
func (b *Backend) ListAll(ctx context.Context, fn func(name string) error) error {
	return b.walk(ctx, "list", backend.Handle{Type: backend.ConfigFile}, b.prefix, func(o swift.Object) error {
		if strings.HasSuffix(o.Name, "/") || o.ContentType == "application/directory" {
			return nil // a folder marker some tools create
		}
		return fn(strings.TrimPrefix(o.Name, b.prefix))
	})
}

// nameFromKey turns a name relative to the type's folder into a handle
// name; names that no handle of type t could produce are skipped.
func nameFromKey(t backend.FileType, rel string) (string, bool) {
	if rel == "" {
		return "", false
	}
	name := rel
	if t == backend.PackFile {
		if i := strings.LastIndexByte(rel, '/'); i >= 0 {
			name = rel[i+1:]
		}
	}
	h := backend.Handle{Type: t, Name: name}
	if h.Valid() != nil || h.Path() != backend.Dir(t)+"/"+rel {
		return "", false
	}
	return name, true
}

// EnsureContainer creates the container if it does not exist yet (for
// repo init); creating an existing container changes nothing.
func (b *Backend) EnsureContainer(ctx context.Context) error {
	if err := b.conn.ContainerCreate(ctx, b.container, nil); err != nil {
		return b.translate(ctx, "create container", backend.Handle{}, fmt.Errorf("create container %q: %w", b.container, err))
	}
	return nil
}

// Close drops idle connections.
func (b *Backend) Close() error {
	b.transport.CloseIdleConnections()
	return nil
}

// notFoundAgain are the waits before a read that was answered 404 is
// asked again. Swift's object server replaces an object by writing the
// new copy and then deleting the older ones; a read that lists the
// object's files before that clean-up and opens one after it is answered
// 404 although the object exists (the conformance suite's concurrent
// overwrites hit it). 0.2 s in all, paid only by reads of what is really
// missing, which pgvault seldom makes: it finds objects by listing.
var notFoundAgain = []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond}

func askAgainOn404(ctx context.Context, read func() error) error {
	err := read()
	for _, d := range notFoundAgain {
		if err == nil || statusOf(err) != http.StatusNotFound {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(d):
		}
		err = read()
	}
	return err
}
