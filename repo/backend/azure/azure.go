package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"golang.org/x/sync/errgroup"

	"github.com/pgvault/pgvault/internal/redact"
	"github.com/pgvault/pgvault/repo/backend"
)

// Environment variables OptionsFromEnv reads: the names Azure's own tools
// (az, azcopy, the SDKs' samples) use.
const (
	EnvConnectionString = "AZURE_STORAGE_CONNECTION_STRING"
	EnvAccount          = "AZURE_STORAGE_ACCOUNT"
	EnvKey              = "AZURE_STORAGE_KEY"
	EnvSASToken         = "AZURE_STORAGE_SAS_TOKEN"
)

// Defaults for Options left zero.
const (
	DefaultBlockSize   = 8 << 20
	DefaultConcurrency = 4
	DefaultTimeout     = 10 * time.Minute
)

// Options configure the backend.
type Options struct {
	Container string
	// Prefix is the name prefix under which the repository lives (no
	// leading or trailing slash needed); empty means the container root.
	Prefix string
	// Account is the storage account; with no Endpoint the service is
	// https://ACCOUNT.blob.core.windows.net.
	Account string
	// Endpoint is the blob service URL, for emulators and sovereign
	// clouds, e.g. "http://127.0.0.1:10000/devstoreaccount1" (Azurite
	// puts the account in the path).
	Endpoint string

	// Credentials, tried in this order; the first one set is used. With
	// none, the default Azure credential chain is.
	ConnectionString string // names the account and endpoint itself
	Key              string // the account's shared key (needs Account)
	SASToken         string // a shared access signature, with or without its leading '?'

	// BlockSize is the size of the blocks a larger object is staged in;
	// an object up to this size is one request. Default DefaultBlockSize.
	BlockSize int64
	// Concurrency is how many blocks of one object are staged at once.
	// Default DefaultConcurrency.
	Concurrency int
	// Timeout bounds one request, body included, so that a server that
	// stops answering cannot wedge a call forever. Default DefaultTimeout.
	Timeout time.Duration
}

// OptionsFromEnv fills o's empty account and credential fields from the
// environment (getenv is os.Getenv outside tests). Fields the repository
// URL set win over the environment.
func (o Options) OptionsFromEnv(getenv func(string) string) Options {
	if o.ConnectionString == "" && o.Key == "" && o.SASToken == "" {
		o.ConnectionString = getenv(EnvConnectionString)
		o.Key = getenv(EnvKey)
		o.SASToken = getenv(EnvSASToken)
	}
	if o.Account == "" {
		o.Account = getenv(EnvAccount)
	}
	return o
}

// Backend is a repository in an Azure Blob Storage container.
type Backend struct {
	client      *container.Client
	container   string
	prefix      string // "" or "some/prefix/"
	server      string // the service URL, for messages (no query: a SAS is secret)
	credential  string // which credential, for messages
	blockSize   int64
	concurrency int
}

var (
	_ backend.Backend   = (*Backend)(nil)
	_ backend.Inventory = (*Backend)(nil)
)

// New configures a client; it does no I/O, so a bad credential or a
// missing container shows on the first call.
func New(ctx context.Context, opts Options) (*Backend, error) {
	if opts.Container == "" {
		return nil, backend.Permanent(errors.New("azure: no container given"))
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if opts.BlockSize > blockblob.MaxStageBlockBytes {
		return nil, backend.Permanent(fmt.Errorf("azure: block size %d is larger than Azure's limit of %d", opts.BlockSize, int64(blockblob.MaxStageBlockBytes)))
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	service := strings.TrimRight(opts.Endpoint, "/")
	if service != "" {
		u, err := url.Parse(service)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" {
			return nil, backend.Permanent(fmt.Errorf("azure: bad endpoint %q: want http://host:port/account or https://host", redact.URL(opts.Endpoint)))
		}
	} else if opts.Account != "" {
		service = "https://" + opts.Account + ".blob.core.windows.net"
	}
	copts := clientOptions(opts.Timeout)
	containerURL := service + "/" + url.PathEscape(opts.Container)
	b := &Backend{
		container:   opts.Container,
		server:      service,
		blockSize:   opts.BlockSize,
		concurrency: opts.Concurrency,
	}
	var err error
	switch {
	case opts.ConnectionString != "":
		if opts.Endpoint != "" {
			return nil, backend.Permanent(fmt.Errorf("azure: %s names the endpoint: drop endpoint= from the repository URL, or unset the variable", EnvConnectionString))
		}
		b.credential = EnvConnectionString
		b.client, err = container.NewClientFromConnectionString(opts.ConnectionString, opts.Container, copts)
		if err != nil {
			// The parser's message may quote the string, key and all.
			return nil, backend.Permanent(fmt.Errorf("azure: %s is malformed: want AccountName=...;AccountKey=...[;BlobEndpoint=...] or BlobEndpoint=...;SharedAccessSignature=...", EnvConnectionString))
		}
		if u, perr := url.Parse(b.client.URL()); perr == nil {
			u.RawQuery = ""
			b.server = strings.TrimSuffix(u.String(), "/"+url.PathEscape(opts.Container))
		}
	case opts.Key != "":
		if opts.Account == "" {
			return nil, backend.Permanent(fmt.Errorf("azure: an account key needs the account's name: set %s or ?account= in the repository URL", EnvAccount))
		}
		b.credential = EnvKey
		cred, cerr := container.NewSharedKeyCredential(opts.Account, opts.Key)
		if cerr != nil {
			return nil, backend.Permanent(fmt.Errorf("azure: %s is not a storage account key (base64)", EnvKey))
		}
		b.client, err = container.NewClientWithSharedKeyCredential(containerURL, cred, copts)
	case opts.SASToken != "":
		if service == "" {
			return nil, backend.Permanent(fmt.Errorf("azure: a SAS token needs the account: set %s, ?account= or ?endpoint= in the repository URL", EnvAccount))
		}
		b.credential = EnvSASToken
		b.client, err = container.NewClientWithNoCredential(containerURL+"?"+strings.TrimPrefix(opts.SASToken, "?"), copts)
	default:
		if service == "" {
			return nil, backend.Permanent(fmt.Errorf("azure: no storage account: set %s or ?account= in the repository URL", EnvAccount))
		}
		b.credential = "the default Azure credential chain"
		cred, cerr := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: copts.ClientOptions})
		if cerr != nil {
			return nil, backend.Permanent(fmt.Errorf("azure: no credentials: set %s, %s and %s, or %s (%s)",
				EnvConnectionString, EnvAccount, EnvKey, EnvSASToken, oneLine(cerr.Error())))
		}
		b.client, err = container.NewClient(containerURL, markedCredential{cred}, copts)
	}
	if err != nil {
		return nil, backend.Permanent(fmt.Errorf("azure: configure a client for %s: %s", b.server, oneLine(redact.Text(err.Error()))))
	}
	if p := strings.Trim(opts.Prefix, "/"); p != "" {
		b.prefix = p + "/"
	}
	return b, nil
}

// markedCredential marks the errors of getting a token, so that translate
// can tell "no credential found" (permanent) from the storage's answers.
type markedCredential struct{ azcore.TokenCredential }

func (c markedCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.TokenCredential.GetToken(ctx, o)
	if err != nil {
		return tok, &credentialError{err}
	}
	return tok, nil
}

type credentialError struct{ err error }

func (e *credentialError) Error() string { return e.err.Error() }
func (e *credentialError) Unwrap() error { return e.err }

// clientOptions switch the SDK's retries off (package retry retries, with
// one policy for every backend) and bound every request.
func clientOptions(timeout time.Duration) *container.ClientOptions {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
		// A server that accepts a request and then says nothing must not
		// wedge a call forever (the caller may have no deadline).
		ResponseHeaderTimeout: 2 * time.Minute,
		ForceAttemptHTTP2:     true,
	}
	return &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: transport},
		Retry: policy.RetryOptions{
			MaxRetries: -1,      // one try
			TryTimeout: timeout, // body included
		},
	}}
}

// Location is azure://container/prefix, followed by the service URL.
func (b *Backend) Location() string {
	loc := "azure://" + b.container
	if b.prefix != "" {
		loc += "/" + strings.TrimSuffix(b.prefix, "/")
	}
	if b.server != "" {
		loc += " (" + b.server + ")"
	}
	return loc
}

func (b *Backend) name(h backend.Handle) string { return b.prefix + h.Path() }

// sdkError keeps the SDK's error in the chain (errors.Is/As) under a short
// message: the SDK's own text spans many lines and repeats URLs.
type sdkError struct {
	msg string
	err error
}

func (e *sdkError) Error() string { return e.msg }
func (e *sdkError) Unwrap() error { return e.err }

func wrap(err error, format string, args ...any) error {
	return &sdkError{msg: fmt.Sprintf(format, args...), err: err}
}

// detail is the useful part of an SDK error, on one line and without the
// request URL (whose query holds a SAS token's signature).
func detail(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return fmt.Sprintf("HTTP %d %s", re.StatusCode, re.ErrorCode)
		}
		return fmt.Sprintf("HTTP %d", re.StatusCode)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return oneLine(redact.Text(ue.Err.Error()))
	}
	return oneLine(redact.Text(err.Error()))
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// translate turns an SDK error into the backend's vocabulary: ErrNotFound,
// permanent errors with a clear message, or a transient error.
func (b *Backend) translate(ctx context.Context, op string, h backend.Handle, err error) error {
	what := op
	if h.Type != 0 {
		what += " " + h.String()
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("azure %s: %w", what, cerr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The per-request timeout (the caller's ctx is fine): transient, so
		// keep context errors out of the chain (they read as permanent).
		return fmt.Errorf("Azure endpoint %s timed out: %s: %s", b.server, what, detail(err))
	}
	var ce *credentialError
	if errors.As(err, &ce) {
		return backend.Permanent(wrap(err, "no Azure credentials for %s: set %s, %s and %s, or %s (the default credential chain found none: %s)",
			b.server, EnvConnectionString, EnvAccount, EnvKey, EnvSASToken, detail(err)))
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return wrap(err, "Azure endpoint %s unreachable: %s: %s", b.server, what, detail(err))
		}
		return wrap(err, "azure %s: %s", what, detail(err))
	}
	code := bloberror.Code(re.ErrorCode)
	switch {
	case code == bloberror.ContainerNotFound:
		return backend.Permanent(wrap(err, "Azure container %q does not exist at %s: create it (pgvault repo init does) (%s)",
			b.container, b.server, what))
	case code == bloberror.BlobNotFound || re.StatusCode == http.StatusNotFound:
		return fmt.Errorf("azure %s: %w", what, backend.ErrNotFound)
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden ||
		strings.HasPrefix(string(code), "Authentication") || strings.HasPrefix(string(code), "Authorization") ||
		code == bloberror.InsufficientAccountPermissions:
		return backend.Permanent(wrap(err, "Azure access denied for container %q at %s: check %s (%s: %s)",
			b.container, b.server, b.credential, what, detail(err)))
	case code == bloberror.InvalidBlockList || code == bloberror.InvalidBlobOrBlock:
		// A racing Save of the same name committed first and dropped our
		// uncommitted blocks: staging them again succeeds.
		return wrap(err, "azure %s: %s (blocks replaced by a concurrent save)", what, detail(err))
	case re.StatusCode == http.StatusRequestTimeout || re.StatusCode == http.StatusConflict ||
		re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500:
		return wrap(err, "azure %s: %s", what, detail(err))
	case re.StatusCode >= 400:
		// Anything else the service refuses (an invalid name, header or
		// API version) is refused again.
		return backend.Permanent(wrap(err, "Azure at %s refused %s: %s", b.server, what, detail(err)))
	}
	return wrap(err, "azure %s: %s", what, detail(err))
}

func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bb := b.client.NewBlockBlobClient(b.name(h))
	var err error
	if int64(len(data)) <= b.blockSize {
		_, err = bb.Upload(ctx, nopCloser{bytes.NewReader(data)}, nil)
	} else {
		// A racing Save of the same name that commits first drops our
		// staged blocks (InvalidBlockList at our commit): stage them again.
		// Commits are atomic, so the blob is always one whole version;
		// under sustained contention the last error is transient and
		// package retry goes on. Only objects above BlockSize take this
		// path, and those are packs and indexes, named by their content
		// and saved once.
		for try := 1; ; try++ {
			err = b.saveBlocks(ctx, bb, data)
			if try == maxCommitRaces || !bloberror.HasCode(err, bloberror.InvalidBlockList, bloberror.InvalidBlobOrBlock) || ctx.Err() != nil {
				break
			}
		}
	}
	if err != nil {
		return b.translate(ctx, "save", h, err)
	}
	return nil
}

// maxCommitRaces bounds how often Save stages a large object again after
// losing a race to a concurrent Save of the same name.
const maxCommitRaces = 8

// saveBlocks stages data in blocks, Concurrency at a time, then commits
// them: the blob appears whole at the commit, or not at all. Blocks left
// uncommitted by a failed Save are dropped by the service (after a week,
// or at the next commit of that blob).
func (b *Backend) saveBlocks(ctx context.Context, bb *blockblob.Client, data []byte) error {
	var tag [8]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return err
	}
	n := (int64(len(data)) + b.blockSize - 1) / b.blockSize
	if n > blockblob.MaxBlocks {
		return backend.Permanent(fmt.Errorf("%d bytes need %d blocks of %d, more than Azure's %d", len(data), n, b.blockSize, blockblob.MaxBlocks))
	}
	ids := make([]string, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.concurrency)
	for i := range ids {
		// Every ID of a blob must have the same length.
		ids[i] = base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%s-%06d", hex.EncodeToString(tag[:]), i))
		start := int64(i) * b.blockSize
		block := data[start:min(start+b.blockSize, int64(len(data)))]
		g.Go(func() error {
			_, err := bb.StageBlock(gctx, ids[i], nopCloser{bytes.NewReader(block)}, nil)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	_, err := bb.CommitBlockList(ctx, ids, nil)
	return err
}

// nopCloser is an io.ReadSeekCloser over a bytes.Reader, which the SDK
// rewinds between its own attempts.
type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("azure load %v at %d+%d: %w", h, offset, length, backend.ErrShortRead)
	}
	resp, err := b.client.NewBlobClient(b.name(h)).DownloadStream(ctx, &blob.DownloadStreamOptions{
		Range: blob.HTTPRange{Offset: offset, Count: length},
	})
	if err != nil {
		if bloberror.HasCode(err, bloberror.InvalidRange) {
			return b.invalidRange(ctx, h, offset, length)
		}
		return nil, b.translate(ctx, "load", h, err)
	}
	defer resp.Body.Close()
	want := length
	if want == 0 && resp.ContentLength != nil {
		want = *resp.ContentLength
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(want, 0)))
	if _, err := io.Copy(buf, resp.Body); err != nil {
		return nil, b.translate(ctx, "load", h, fmt.Errorf("read body: %w", err))
	}
	got := int64(buf.Len())
	if (length > 0 && got != length) || (resp.ContentLength != nil && got != *resp.ContentLength) {
		return nil, fmt.Errorf("azure load %v at %d+%d: got %d bytes: %w", h, offset, length, got, backend.ErrShortRead)
	}
	return buf.Bytes(), nil
}

// invalidRange handles the 416 answer: a range starting at the very end of
// the blob, "to the end", is empty; anything else is a short read.
func (b *Backend) invalidRange(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	fi, err := b.Stat(ctx, h)
	if err != nil {
		return nil, err
	}
	if length == 0 && offset == fi.Size {
		return []byte{}, nil
	}
	return nil, fmt.Errorf("azure load %v at %d+%d of %d bytes: %w", h, offset, length, fi.Size, backend.ErrShortRead)
}

func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	props, err := b.client.NewBlobClient(b.name(h)).GetProperties(ctx, nil)
	if err != nil {
		return backend.FileInfo{}, b.translate(ctx, "stat", h, err)
	}
	fi := backend.FileInfo{Name: h.Name}
	if props.ContentLength != nil {
		fi.Size = *props.ContentLength
	}
	if props.LastModified != nil {
		fi.ModTime = *props.LastModified
	}
	return fi, nil
}

// Remove deletes the blob; Azure answers BlobNotFound for a missing one.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := b.client.NewBlobClient(b.name(h)).Delete(ctx, nil); err != nil {
		return b.translate(ctx, "remove", h, err)
	}
	return nil
}

func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t == backend.ConfigFile {
		return backend.ListConfig(ctx, b.Stat, fn)
	}
	dir := b.prefix + backend.Dir(t) + "/"
	return b.list(ctx, dir, backend.Handle{Type: t, Name: "*"}, func(name string, fi backend.FileInfo) error {
		n, ok := nameFromKey(t, strings.TrimPrefix(name, dir))
		if !ok {
			return nil
		}
		fi.Name = n
		return fn(fi)
	})
}

// ListAll lists every blob under the prefix (backend.Inventory).
func (b *Backend) ListAll(ctx context.Context, fn func(name string) error) error {
	return b.list(ctx, b.prefix, backend.Handle{Type: backend.ConfigFile}, func(name string, _ backend.FileInfo) error {
		if strings.HasSuffix(name, "/") {
			return nil // a folder marker some tools create
		}
		return fn(strings.TrimPrefix(name, b.prefix))
	})
}

// list calls fn with the full name, size and time of every blob whose name
// starts with prefix.
func (b *Backend) list(ctx context.Context, prefix string, h backend.Handle, fn func(string, backend.FileInfo) error) error {
	pager := b.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return b.translate(ctx, "list", h, err)
		}
		if page.Segment == nil {
			continue
		}
		for _, item := range page.Segment.BlobItems {
			if item == nil || item.Name == nil {
				continue
			}
			var fi backend.FileInfo
			if p := item.Properties; p != nil {
				if p.ContentLength != nil {
					fi.Size = *p.ContentLength
				}
				if p.LastModified != nil {
					fi.ModTime = *p.LastModified
				}
			}
			if err := fn(*item.Name, fi); err != nil {
				return err
			}
		}
	}
	return nil
}

// nameFromKey turns a name relative to the type's folder into a handle
// name; names that no handle of type t could produce are skipped.
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

// EnsureContainer creates the container if it does not exist yet (for
// repo init).
func (b *Backend) EnsureContainer(ctx context.Context) error {
	_, err := b.client.Create(ctx, nil)
	if err == nil || bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil
	}
	if bloberror.HasCode(err, bloberror.AuthorizationPermissionMismatch, bloberror.AuthorizationFailure) {
		// A SAS or role scoped to the container may not create it (nor
		// read its properties); if it can list the container, it exists.
		one := int32(1)
		if _, lerr := b.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{MaxResults: &one}).NextPage(ctx); lerr == nil {
			return nil
		}
	}
	return b.translate(ctx, "create container "+b.container, backend.Handle{}, err)
}

// Close does nothing: the client holds no resources beyond idle
// connections, which time out.
func (b *Backend) Close() error { return nil }
