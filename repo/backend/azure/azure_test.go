package azure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/pgvault/pgvault/integration/azurite"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/azure"
	"github.com/pgvault/pgvault/repo/backend/backendtest"
	"github.com/pgvault/pgvault/repo/backend/retry"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := azurite.Start(t)
	for _, tc := range []struct {
		name      string
		blockSize int64
	}{
		{"single put", 0},
		// Objects above 128 KiB staged in blocks, so that the suite
		// checks the block path's content, ranges and concurrency too.
		// (Its contended lock, 64-92 KiB, stays one request, as locks
		// are in use: see TestLargeObjectRacingSaves for blocks.)
		{"staged blocks", 128 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			backendtest.Run(t, func(t *testing.T) backend.Backend {
				// A fresh prefix per subtest keeps subtests apart in one container.
				opts := srv.Options(fmt.Sprintf("conformance/%d-%d", tc.blockSize, n.Add(1)))
				opts.BlockSize = tc.blockSize
				b, err := azure.New(t.Context(), opts)
				if err != nil {
					t.Fatal(err)
				}
				return b
			})
		})
	}
}

// TestCredentials: each way of giving credentials reaches the server.
func TestCredentials(t *testing.T) {
	t.Parallel()
	srv := azurite.Start(t)
	ctx := t.Context()
	key, err := azure.New(ctx, srv.Options("creds"))
	if err != nil {
		t.Fatal(err)
	}
	sas := sasToken(t, srv)
	for _, tc := range []struct {
		name string
		opts azure.Options
	}{
		{"account key", srv.Options("creds")},
		{"connection string", azure.Options{Container: srv.Container, Prefix: "creds", ConnectionString: srv.ConnectionString()}},
		{"SAS token", azure.Options{Container: srv.Container, Prefix: "creds", Endpoint: srv.Endpoint, SASToken: sas}},
		{"SAS token with ?", azure.Options{Container: srv.Container, Prefix: "creds", Endpoint: srv.Endpoint, SASToken: "?" + sas}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := azure.New(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			h := backend.Handle{Type: backend.KeyFile, Name: strings.ReplaceAll(tc.name, " ", "-")}
			if err := b.Save(ctx, h, []byte(tc.name)); err != nil {
				t.Fatalf("Save: %v", err)
			}
			got, err := key.Load(ctx, h, 0, 0)
			if err != nil || string(got) != tc.name {
				t.Fatalf("Load through the key: %q, %v", got, err)
			}
			if err := b.EnsureContainer(ctx); err != nil {
				t.Errorf("EnsureContainer of the existing container: %v", err)
			}
			if loc := b.Location(); strings.Contains(loc, srv.Endpoint) == false || strings.Contains(loc, "sig=") || strings.Contains(loc, azurite.Key) {
				t.Errorf("Location() = %q: want the endpoint and no secret", loc)
			}
		})
	}
}

// sasToken makes a container SAS with every permission for an hour.
func sasToken(t *testing.T, srv *azurite.Server) string {
	t.Helper()
	cred, err := container.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		t.Fatal(err)
	}
	perms := sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}
	q, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().Add(time.Hour).UTC(),
		ContainerName: srv.Container,
		Permissions:   perms.String(),
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	return q.Encode()
}

func TestEmptyPrefixAndLocation(t *testing.T) {
	t.Parallel()
	srv := azurite.Start(t)
	ctx := t.Context()
	b, err := azure.New(ctx, srv.Options(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []backend.Handle{
		{Type: backend.ConfigFile},
		{Type: backend.PackFile, Name: "abcdef"},
		{Type: backend.WALFile, Name: "00000001/000000010000000000000001"},
	} {
		if err := b.Save(ctx, h, []byte(h.Name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ft := range []backend.FileType{backend.ConfigFile, backend.PackFile, backend.WALFile} {
		var names []string
		if err := b.List(ctx, ft, func(fi backend.FileInfo) error { names = append(names, fi.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(names) != 1 {
			t.Errorf("List(%v) = %q, want one name", ft, names)
		}
	}
	if got, want := b.Location(), "azure://"+srv.Container+" ("+srv.Endpoint+")"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
	pub, err := azure.New(ctx, azure.Options{Container: "c", Prefix: "/a/b/", Account: "acct", Key: azurite.Key})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pub.Location(), "azure://c/a/b (https://acct.blob.core.windows.net)"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

// TestLargeObjectInBlocks: an object of many blocks comes back whole and
// in ranges that cross block boundaries.
func TestLargeObjectInBlocks(t *testing.T) {
	t.Parallel()
	srv := azurite.Start(t)
	ctx := t.Context()
	opts := srv.Options("large")
	opts.BlockSize = 256 << 10
	opts.Concurrency = 3
	b, err := azure.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 5<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	h := backend.Handle{Type: backend.PackFile, Name: "0123456789abcdef"}
	if err := b.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	got, err := b.Load(ctx, h, 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Load: %d bytes, %v; want %d identical bytes", len(got), err, len(data))
	}
	off, n := int64(256<<10-100), int64(1<<20)
	got, err = b.Load(ctx, h, off, n)
	if err != nil || !bytes.Equal(got, data[off:off+n]) {
		t.Fatalf("Load range across blocks: %d bytes, %v", len(got), err)
	}
	fi, err := b.Stat(ctx, h)
	if err != nil || fi.Size != int64(len(data)) {
		t.Fatalf("Stat: %+v, %v", fi, err)
	}
}

// TestLargeObjectRacingSaves: Saves of one large name racing each other
// (which pgvault does not do, but may) each end, through package retry,
// with one whole version in place.
func TestLargeObjectRacingSaves(t *testing.T) {
	t.Parallel()
	srv := azurite.Start(t)
	ctx := t.Context()
	opts := srv.Options("race")
	opts.BlockSize = 64 << 10
	raw, err := azure.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, retries, giveUps := counting(raw, 20)
	h := backend.Handle{Type: backend.PackFile, Name: "fedcba9876543210"}
	versions := make([][]byte, 3)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 300<<10+i)
	}
	var wg sync.WaitGroup
	for _, v := range versions {
		wg.Go(func() {
			if err := b.Save(ctx, h, v); err != nil {
				t.Errorf("Save: %v", err)
			}
		})
	}
	wg.Wait()
	got, err := b.Load(ctx, h, 0, 0)
	if err != nil || !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(got, v) }) {
		t.Fatalf("after racing saves: %d bytes matching no version, %v", len(got), err)
	}
	t.Logf("racing saves: %d retries, %d give-ups", retries.Load(), giveUps.Load())
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts azure.Options
		want string
	}{
		{"no container", azure.Options{}, "no container"},
		{"no account", azure.Options{Container: "c"}, "no storage account"},
		{"key without account", azure.Options{Container: "c", Key: azurite.Key}, "needs the account's name"},
		{"key not base64", azure.Options{Container: "c", Account: "a", Key: "not*base64"}, "not a storage account key"},
		{"SAS without account", azure.Options{Container: "c", SASToken: "sv=x&sig=secretsig"}, "needs the account"},
		{"bad endpoint", azure.Options{Container: "c", Account: "a", Key: azurite.Key, Endpoint: "ftp://x"}, "bad endpoint"},
		{"malformed connection string", azure.Options{Container: "c", ConnectionString: "AccountKey=supersecret"}, "is malformed"},
		{"connection string and endpoint", azure.Options{Container: "c", ConnectionString: "x", Endpoint: "http://127.0.0.1:1/a"}, "names the endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := azure.New(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !backend.IsPermanent(err) {
				t.Fatalf("New: %v, want a permanent error containing %q", err, tc.want)
			}
			for _, secret := range []string{"supersecret", "secretsig", azurite.Key} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows a secret: %v", err)
				}
			}
		})
	}
}

func TestOptionsFromEnv(t *testing.T) {
	env := map[string]string{
		azure.EnvAccount: "envacct", azure.EnvKey: "envkey",
		azure.EnvSASToken: "envsas", azure.EnvConnectionString: "envcs",
	}
	got := azure.Options{Container: "c", Account: "urlacct"}.OptionsFromEnv(func(k string) string { return env[k] })
	want := azure.Options{Container: "c", Account: "urlacct", ConnectionString: "envcs", Key: "envkey", SASToken: "envsas"}
	if got != want {
		t.Errorf("OptionsFromEnv = %+v, want %+v (the URL's account wins)", got, want)
	}
	got = azure.Options{Container: "c", SASToken: "given"}.OptionsFromEnv(func(k string) string { return env[k] })
	if got.Key != "" || got.ConnectionString != "" || got.Account != "envacct" {
		t.Errorf("OptionsFromEnv with a SAS given: %+v, want no other credential from the environment", got)
	}
}

// counting is a retry wrapper that records retries and give-ups.
func counting(b backend.Backend, attempts int) (*retry.Backend, *atomic.Int64, *atomic.Int64) {
	var retries, giveUps atomic.Int64
	return retry.New(b, retry.Options{
		MaxAttempts:  attempts,
		InitialDelay: 10 * time.Millisecond,
		MaxDelay:     20 * time.Millisecond,
		OnRetry:      func(string, backend.Handle, int, error) { retries.Add(1) },
		OnGiveUp:     func(string, backend.Handle, error) { giveUps.Add(1) },
	}), &retries, &giveUps
}

func TestWrongCredentialsArePermanent(t *testing.T) {
	t.Parallel()
	srv := azurite.Start(t)
	ctx := t.Context()
	wrongKey := "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="
	badSAS := "sv=2021-08-06&ss=b&srt=sco&sp=rwdlc&se=2099-01-01T00:00:00Z&sig=c2VjcmV0c2lnbmF0dXJlc2VjcmV0c2lnbmF0dXJlMTI%3D"
	for _, tc := range []struct {
		name, secret, check string
		opts                azure.Options
	}{
		{"wrong key", wrongKey, azure.EnvKey, azure.Options{Container: srv.Container, Prefix: "x", Account: azurite.Account, Endpoint: srv.Endpoint, Key: wrongKey}},
		{"bad SAS", "c2VjcmV0c2lnbmF0dXJl", azure.EnvSASToken, azure.Options{Container: srv.Container, Prefix: "x", Endpoint: srv.Endpoint, SASToken: badSAS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := azure.New(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			b, retries, _ := counting(raw, 5)
			h := backend.Handle{Type: backend.ConfigFile}
			for op, call := range map[string]func() error{
				"save": func() error { return b.Save(ctx, h, []byte("x")) },
				"load": func() error { _, err := b.Load(ctx, h, 0, 0); return err },
				"stat": func() error { _, err := b.Stat(ctx, h); return err },
				"list": func() error { return b.List(ctx, backend.PackFile, func(backend.FileInfo) error { return nil }) },
			} {
				err := call()
				t.Logf("%s: %v", op, err)
				if err == nil || !backend.IsPermanent(err) || errors.Is(err, backend.ErrNotFound) {
					t.Errorf("%s: %v, want a permanent error that is not 'not found'", op, err)
					continue
				}
				msg := err.Error()
				if !strings.Contains(msg, "Azure access denied for container \""+srv.Container+"\"") || !strings.Contains(msg, "check "+tc.check) {
					t.Errorf("%s: message %q does not say access was denied and what to check", op, msg)
				}
				if strings.Contains(msg, tc.secret) || strings.Contains(msg, "\n") {
					t.Errorf("%s: message shows the secret or spans lines: %q", op, msg)
				}
			}
			if n := retries.Load(); n != 0 {
				t.Errorf("permanent errors were retried %d times", n)
			}
		})
	}
}

func TestMissingContainerIsPermanent(t *testing.T) {
	t.Parallel()
	srv := azurite.Start(t)
	ctx := t.Context()
	opts := srv.Options("x")
	opts.Container = "no-such-container"
	b, err := azure.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for op, err := range map[string]error{
		"save": b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")),
		"list": b.List(ctx, backend.KeyFile, func(backend.FileInfo) error { return nil }),
	} {
		t.Logf("%s: %v", op, err)
		if !backend.IsPermanent(err) || !strings.Contains(fmt.Sprint(err), `Azure container "no-such-container" does not exist`) {
			t.Errorf("%s: %v, want a permanent error saying the container does not exist", op, err)
		}
	}
	if err := b.EnsureContainer(ctx); err != nil {
		t.Fatalf("EnsureContainer: %v", err)
	}
	if err := b.EnsureContainer(ctx); err != nil {
		t.Fatalf("EnsureContainer of an existing container: %v", err)
	}
	if err := b.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("x")); err != nil {
		t.Fatalf("Save after EnsureContainer: %v", err)
	}
}

func TestUnreachableEndpointIsRetriedThenOneClearError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	raw, err := azure.New(t.Context(), azure.Options{
		Container: "c", Endpoint: "http://" + addr + "/acct", SASToken: "sv=1&sig=topsecretsig",
	})
	if err != nil {
		t.Fatal(err)
	}
	b, retries, giveUps := counting(raw, 3)
	_, err = b.Load(t.Context(), backend.Handle{Type: backend.ConfigFile}, 0, 0)
	if err == nil || backend.IsPermanent(err) {
		t.Fatalf("Load from a closed port: %v, want a transient error", err)
	}
	if retries.Load() != 2 || giveUps.Load() != 1 {
		t.Errorf("retries %d, give-ups %d; want 2 and 1", retries.Load(), giveUps.Load())
	}
	t.Logf("error: %v", err)
	msg := err.Error()
	for _, want := range []string{"giving up after 3 attempts", "Azure endpoint http://" + addr + "/acct unreachable", "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "topsecretsig") || strings.Contains(msg, "\n") {
		t.Errorf("error shows the SAS or spans lines: %q", msg)
	}
}

// TestTimeoutIsTransient: a server that accepts and never answers ends
// the call after Options.Timeout, with an error that may be retried.
func TestTimeoutIsTransient(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	b, err := azure.New(t.Context(), azure.Options{
		Container: "c", Endpoint: "http://" + l.Addr().String() + "/acct", SASToken: "sv=1&sig=x", Timeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Stat(t.Context(), backend.Handle{Type: backend.ConfigFile})
	t.Logf("error after %v: %v", time.Since(start), err)
	if err == nil || backend.IsPermanent(err) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Stat from a silent server: %v, want a transient timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}
