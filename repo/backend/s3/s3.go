package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/pgvault/pgvault/repo/backend"
)

// Options configure the backend.
type Options struct {
	Bucket string
	// Prefix is the key prefix under which the repository lives (no leading
	// or trailing slash needed); empty means the bucket root.
	Prefix string
	// Endpoint is the S3 server's URL, e.g. "http://127.0.0.1:9000"; empty
	// means AWS. An endpoint given without a scheme uses https, or http
	// when Insecure is set.
	Endpoint string
	// Region defaults to the AWS configuration (AWS_REGION), else us-east-1.
	Region string
	// PathStyle addresses the bucket as endpoint/bucket/key instead of
	// bucket.endpoint/key (MinIO and most self-hosted servers want this).
	PathStyle bool
	// AccessKey and SecretKey are the credentials; when empty the standard
	// AWS chain is used (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, shared
	// config and credentials files, instance roles).
	AccessKey string
	SecretKey string
	// SessionToken goes with temporary credentials given in AccessKey.
	SessionToken string
	// Insecure allows plain http for an endpoint given without a scheme.
	Insecure bool
}

// Backend is a repository in an S3 bucket.
type Backend struct {
	client   *s3.Client
	bucket   string
	prefix   string // "" or "some/prefix/"
	endpoint string // for messages
	region   string
}

var _ backend.Backend = (*Backend)(nil)

// New configures a client; it does no I/O, so a bad credential or a
// missing bucket shows on the first call.
func New(ctx context.Context, opts Options) (*Backend, error) {
	if opts.Bucket == "" {
		return nil, backend.Permanent(errors.New("s3: no bucket given"))
	}
	endpoint := opts.Endpoint
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		if opts.Insecure {
			endpoint = "http://" + endpoint
		} else {
			endpoint = "https://" + endpoint
		}
	}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, backend.Permanent(fmt.Errorf("s3: bad endpoint %q: want http://host:port or https://host", opts.Endpoint))
		}
	}

	// A BuildableClient, so the SDK can still apply AWS_CA_BUNDLE.
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 10 * time.Second }).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = 32
			// A server that accepts a request and then says nothing must
			// not wedge a call forever (the caller may have no deadline).
			t.ResponseHeaderTimeout = 2 * time.Minute
		}).
		WithReadTimeout(2 * time.Minute)
	loadOpts := []func(*config.LoadOptions) error{
		// The SDK's own log lines ("WARN falling back to IMDSv1" when no
		// credentials are found) would come before pgvault's one-line
		// error that says what to set; every failure reaches that error.
		config.WithLogger(logging.Nop{}),
		config.WithHTTPClient(httpClient),
		config.WithRetryMaxAttempts(1),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.AccessKey != "" || opts.SecretKey != "" {
		if opts.AccessKey == "" || opts.SecretKey == "" {
			return nil, backend.Permanent(errors.New("s3: give both an access key and a secret key, or neither"))
		}
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKey, opts.SecretKey, opts.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, backend.Permanent(fmt.Errorf("s3: load AWS configuration: %w", err))
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		o.RetryMaxAttempts = 1
		o.Retryer = aws.NopRetryer{}
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &Backend{
		client:   client,
		bucket:   opts.Bucket,
		prefix:   prefix,
		endpoint: endpoint,
		region:   cfg.Region,
	}, nil
}

// Location is s3://bucket/prefix, followed by the endpoint if not AWS.
func (b *Backend) Location() string {
	loc := "s3://" + b.bucket
	if b.prefix != "" {
		loc += "/" + strings.TrimSuffix(b.prefix, "/")
	}
	if b.endpoint != "" {
		loc += " (" + b.endpoint + ")"
	}
	return loc
}

func (b *Backend) key(h backend.Handle) string { return b.prefix + h.Path() }

// sdkError keeps the SDK's error in the chain (errors.Is/As) under a short
// message: the SDK's own text repeats request IDs and URLs.
type sdkError struct {
	msg string
	err error
}

func (e *sdkError) Error() string { return e.msg }
func (e *sdkError) Unwrap() error { return e.err }

func wrap(err error, format string, args ...any) error {
	return &sdkError{msg: fmt.Sprintf(format, args...), err: err}
}

// detail is the useful part of an SDK error: the API's code and message,
// or the network error.
func detail(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if m := ae.ErrorMessage(); m != "" && m != ae.ErrorCode() {
			return ae.ErrorCode() + ": " + m
		}
		return ae.ErrorCode()
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	return err.Error()
}

// translate turns an SDK error into the backend's vocabulary: ErrNotFound,
// permanent errors with a clear message, or a transient error.
func (b *Backend) translate(ctx context.Context, op string, h backend.Handle, err error) error {
	what := op
	if h.Type != 0 {
		what += " " + h.String()
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("s3 %s: %w", what, cerr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// An internal timeout (the caller's ctx is fine): transient, so
		// keep context errors out of the chain (they read as permanent).
		return fmt.Errorf("S3 endpoint %s timed out: %s: %s", b.server(), what, detail(err))
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nsb *types.NoSuchBucket
	switch {
	case errors.As(err, &nsb) || code == "NoSuchBucket":
		return backend.Permanent(wrap(err, "S3 bucket %q does not exist at %s: create it (pgvault repo init does) (%s)",
			b.bucket, b.server(), what))
	case errors.As(err, &nsk) || errors.As(err, &nf) || code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("s3 %s: %w", what, backend.ErrNotFound)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "AccessDenied" ||
		code == "Forbidden" || code == "InvalidToken" || code == "ExpiredToken" || status == http.StatusForbidden:
		return backend.Permanent(wrap(err, "S3 access denied for bucket %q at %s: check access key and secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) (%s: %s)",
			b.bucket, b.server(), what, detail(err)))
	case code == "AuthorizationHeaderMalformed" || code == "PermanentRedirect" || code == "IllegalLocationConstraintException":
		return backend.Permanent(wrap(err, "S3 bucket %q at %s rejects region %q: set the bucket's region (%s: %s)",
			b.bucket, b.server(), b.region, what, detail(err)))
	case code == "InvalidBucketName":
		return backend.Permanent(wrap(err, "S3 bucket name %q is invalid (%s)", b.bucket, detail(err)))
	case strings.Contains(err.Error(), "failed to retrieve credentials") ||
		strings.Contains(err.Error(), "failed to refresh cached credentials"):
		return backend.Permanent(wrap(err, "no S3 credentials for %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (%v)",
			b.server(), err))
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return wrap(err, "S3 endpoint %s unreachable: %s: %s", b.server(), what, detail(err))
	}
	if code != "" {
		return wrap(err, "s3 %s: HTTP %d %s", what, status, detail(err))
	}
	return fmt.Errorf("s3 %s: %w", what, err)
}

func (b *Backend) server() string {
	if b.endpoint != "" {
		return b.endpoint
	}
	return "AWS region " + b.region
}

func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(b.bucket),
		Key:           aws.String(b.key(h)),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err != nil {
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
		return nil, fmt.Errorf("s3 load %v at %d+%d: %w", h, offset, length, backend.ErrShortRead)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.key(h))}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange" {
			return b.invalidRange(ctx, h, offset, length)
		}
		return nil, b.translate(ctx, "load", h, err)
	}
	defer out.Body.Close()
	want := length
	if want == 0 && out.ContentLength != nil {
		want = *out.ContentLength
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(want, 0)))
	if _, err := buf.ReadFrom(out.Body); err != nil {
		return nil, b.translate(ctx, "load", h, fmt.Errorf("read body: %w", err))
	}
	got := int64(buf.Len())
	if (length > 0 && got != length) || (out.ContentLength != nil && got != *out.ContentLength) {
		return nil, fmt.Errorf("s3 load %v at %d+%d: got %d bytes: %w", h, offset, length, got, backend.ErrShortRead)
	}
	return buf.Bytes(), nil
}

// invalidRange handles S3's 416 answer: a range starting at the very end of
// the object, "to the end", is empty; anything else is a short read.
func (b *Backend) invalidRange(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	fi, err := b.Stat(ctx, h)
	if err != nil {
		return nil, err
	}
	if length == 0 && offset == fi.Size {
		return []byte{}, nil
	}
	return nil, fmt.Errorf("s3 load %v at %d+%d of %d bytes: %w", h, offset, length, fi.Size, backend.ErrShortRead)
}

func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, backend.Permanent(err)
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.key(h))})
	if err != nil {
		return backend.FileInfo{}, b.translate(ctx, "stat", h, err)
	}
	fi := backend.FileInfo{Name: h.Name}
	if out.ContentLength != nil {
		fi.Size = *out.ContentLength
	}
	if out.LastModified != nil {
		fi.ModTime = *out.LastModified
	}
	return fi, nil
}

// Remove deletes the object; S3 reports success for a missing key, so the
// object's existence is checked first.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if _, err := b.Stat(ctx, h); err != nil {
		return err
	}
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.key(h))})
	if err != nil {
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
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(b.bucket),
		Prefix: aws.String(dir),
	})
	h := backend.Handle{Type: t, Name: "*"}
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return b.translate(ctx, "list", h, err)
		}
		for _, obj := range page.Contents {
			if obj.Key == nil {
				continue
			}
			name, ok := nameFromKey(t, strings.TrimPrefix(*obj.Key, dir))
			if !ok {
				continue
			}
			fi := backend.FileInfo{Name: name}
			if obj.Size != nil {
				fi.Size = *obj.Size
			}
			if obj.LastModified != nil {
				fi.ModTime = *obj.LastModified
			}
			if err := fn(fi); err != nil {
				return err
			}
		}
	}
	return nil
}

// ListAll lists every object under the prefix (backend.Inventory).
func (b *Backend) ListAll(ctx context.Context, fn func(name string) error) error {
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket), Prefix: aws.String(b.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return b.translate(ctx, "list", backend.Handle{Type: backend.ConfigFile}, err)
		}
		for _, obj := range page.Contents {
			if obj.Key == nil || strings.HasSuffix(*obj.Key, "/") {
				continue // a folder marker some tools create
			}
			if err := fn(strings.TrimPrefix(*obj.Key, b.prefix)); err != nil {
				return err
			}
		}
	}
	return nil
}

// nameFromKey turns a key relative to the type's folder into a handle name;
// keys that no handle of type t could produce are skipped.
func nameFromKey(t backend.FileType, rel string) (string, bool) {
	if rel == "" {
		return "", false
	}
	name := rel
	if t == backend.PackFile {
		name = path.Base(rel)
	}
	if err := (backend.Handle{Type: t, Name: name}).Valid(); err != nil {
		return "", false
	}
	if (backend.Handle{Type: t, Name: name}).Path() != backend.Dir(t)+"/"+rel {
		return "", false
	}
	return name, true
}

// EnsureBucket creates the bucket if it does not exist yet (for repo init).
func (b *Backend) EnsureBucket(ctx context.Context) error {
	_, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.bucket)})
	if err == nil {
		return nil
	}
	if terr := b.translate(ctx, "check bucket", backend.Handle{}, err); !errors.Is(terr, backend.ErrNotFound) {
		return terr
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(b.bucket)}
	if b.region != "" && b.region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(b.region),
		}
	}
	_, err = b.client.CreateBucket(ctx, in)
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return b.translate(ctx, "create bucket", backend.Handle{}, fmt.Errorf("create bucket %q: %w", b.bucket, err))
	}
	return nil
}

// Close does nothing: the SDK's client holds no resources beyond idle
// connections, which time out.
func (b *Backend) Close() error { return nil }
