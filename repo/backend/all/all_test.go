package all_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgvault/pgvault/integration/azurite"
	"github.com/pgvault/pgvault/integration/fakegcs"
	"github.com/pgvault/pgvault/integration/minio"
	"github.com/pgvault/pgvault/integration/sshd"
	"github.com/pgvault/pgvault/integration/swiftaio"
	"github.com/pgvault/pgvault/repo/backend"
	"github.com/pgvault/pgvault/repo/backend/all"
	"github.com/pgvault/pgvault/repo/backend/azure"
	"github.com/pgvault/pgvault/repo/backend/gcs"
	"github.com/pgvault/pgvault/repo/backend/retry"
	"github.com/pgvault/pgvault/repo/backend/s3"
	"github.com/pgvault/pgvault/repo/backend/sftp"
	"github.com/pgvault/pgvault/repo/backend/swift"
)

func TestParseURL(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		want all.Location
	}{
		{"/var/backups/pg", all.Location{Scheme: "file", Path: "/var/backups/pg"}},
		{"/var/backups/pg/", all.Location{Scheme: "file", Path: "/var/backups/pg"}},
		{"repo", all.Location{Scheme: "file", Path: filepath.Join(wd, "repo")}},
		{"./a/../b", all.Location{Scheme: "file", Path: filepath.Join(wd, "b")}},
		{"backup:2024", all.Location{Scheme: "file", Path: filepath.Join(wd, "backup:2024")}},
		{"file:///srv/repo", all.Location{Scheme: "file", Path: "/srv/repo"}},
		{"FILE:///srv/repo", all.Location{Scheme: "file", Path: "/srv/repo"}},
		{"file://localhost/srv/repo", all.Location{Scheme: "file", Path: "/srv/repo"}},
		{"s3://bkt", all.Location{Scheme: "s3", S3: s3.Options{Bucket: "bkt"}}},
		{"s3://bkt/a/b/", all.Location{Scheme: "s3", S3: s3.Options{Bucket: "bkt", Prefix: "a/b"}}},
		{"s3://bkt/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true",
			all.Location{Scheme: "s3", S3: s3.Options{Bucket: "bkt", Prefix: "prefix", Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", PathStyle: true}}},
		{"s3://bkt/p?endpoint=minio.lan:9000&insecure=1",
			all.Location{Scheme: "s3", S3: s3.Options{Bucket: "bkt", Prefix: "p", Endpoint: "minio.lan:9000", Insecure: true}}},
		{"sftp://backup@host.example:2222/srv/repo?identity=/k&known_hosts=/kh",
			all.Location{Scheme: "sftp", SFTP: sftp.Options{User: "backup", Host: "host.example", Port: 2222, Path: "/srv/repo", IdentityFile: "/k", KnownHostsFile: "/kh"}}},
		{"sftp://host/~/repo?connections=4",
			all.Location{Scheme: "sftp", SFTP: sftp.Options{Host: "host", Path: "/~/repo", Connections: 4}}},
		{"sftp://u@[::1]:22/r", all.Location{Scheme: "sftp", SFTP: sftp.Options{User: "u", Host: "::1", Port: 22, Path: "/r"}}},
		{"swift://backups", all.Location{Scheme: "swift", Swift: swift.Options{Container: "backups"}}},
		{"swift://backups/pg/main/", all.Location{Scheme: "swift", Swift: swift.Options{Container: "backups", Prefix: "pg/main"}}},
		{"SWIFT://c/p?auth_url=https://keystone.example:5000/v3&region=RegionOne&auth_version=3",
			all.Location{Scheme: "swift", Swift: swift.Options{Container: "c", Prefix: "p", AuthURL: "https://keystone.example:5000/v3", Region: "RegionOne", AuthVersion: 3}}},
		{"swift://c/p?auth_url=http://127.0.0.1:8080/auth/v1.0", all.Location{Scheme: "swift", Swift: swift.Options{Container: "c", Prefix: "p", AuthURL: "http://127.0.0.1:8080/auth/v1.0"}}},
		{"azure://backups", all.Location{Scheme: "azure", Azure: azure.Options{Container: "backups"}}},
		{"AZURE://backups/pg/main/", all.Location{Scheme: "azure", Azure: azure.Options{Container: "backups", Prefix: "pg/main"}}},
		{"azure://backups/p?account=acct", all.Location{Scheme: "azure", Azure: azure.Options{Container: "backups", Prefix: "p", Account: "acct"}}},
		{"azure://pgvault-test/p?account=devstoreaccount1&endpoint=http://127.0.0.1:10000/devstoreaccount1",
			all.Location{Scheme: "azure", Azure: azure.Options{Container: "pgvault-test", Prefix: "p", Account: "devstoreaccount1", Endpoint: "http://127.0.0.1:10000/devstoreaccount1"}}},
		{"gs://bkt", all.Location{Scheme: "gs", GCS: gcs.Options{Bucket: "bkt"}}},
		{"GS://bkt/a/b/", all.Location{Scheme: "gs", GCS: gcs.Options{Bucket: "bkt", Prefix: "a/b"}}},
		{"gs://bkt/p?endpoint=http://127.0.0.1:4443&project=my-proj",
			all.Location{Scheme: "gs", GCS: gcs.Options{Bucket: "bkt", Prefix: "p", Endpoint: "http://127.0.0.1:4443", Project: "my-proj"}}},
		{"gs://bkt/p?endpoint=127.0.0.1:4443",
			all.Location{Scheme: "gs", GCS: gcs.Options{Bucket: "bkt", Prefix: "p", Endpoint: "127.0.0.1:4443"}}},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got, err := all.ParseURL(tc.url)
			if err != nil {
				t.Fatalf("ParseURL: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseURL = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	tests := []struct {
		url  string
		want string // in the message
	}{
		{"", "no repository given"},
		{"   ", "no repository given"},
		{"ftp://host/x", `unknown repository URL scheme "ftp": use file://, s3://, gs://, azure://, sftp:// or swift://`},
		{"gcs://bucket/x", `unknown repository URL scheme "gcs"`},
		{"s3:bucket/x", "write s3://"},
		{"sftp:host:/x", "write sftp://"},
		{"file://relative/path", "three slashes"},
		{"file://", "no path"},
		{"file:///x?y=1", "no query"},
		{"s3://", "no bucket"},
		{"s3:///prefix", "no bucket"},
		{"s3://key:secret@bkt/p", "credentials do not belong in the URL"},
		{"s3://bkt:9000/p", "give the server as ?endpoint="},
		{"s3://bkt/p?endpont=http://x", `unknown parameter "endpont"`},
		{"s3://bkt/p?path_style=maybe", "want true or false"},
		{"s3://bkt/p?endpoint=ftp://x", "want http://host:port"},
		{"s3://bkt/p?region=a&region=b", "given 2 times"},
		{"sftp://u:pw@host/x", "passwords are not supported"},
		{"sftp:///x", "no host"},
		{"sftp://host", "no repository folder"},
		{"sftp://host/", "no repository folder"},
		{"sftp://host:0/x", "bad port"},
		{"sftp://host:99999/x", "bad port"},
		{"sftp://host:ssh/x", "repository URL"},
		{"sftp://host/x?identity=/k&password=x", `unknown parameter "password"`},
		{"sftp://host/x?connections=0", "connections="},
		{"s3://bkt/%zz", "repository URL"},
		{"swift:c/p", "write swift://"},
		{"swift://", "no container"},
		{"swift:///prefix", "no container"},
		{"swift://user:secret@c/p", "credentials do not belong in the URL"},
		{"swift://c:8080/p", "the host part is the container"},
		{"swift://c/p?authurl=http://x/v3", `unknown parameter "authurl"`},
		{"swift://c/p?auth_url=ftp://x/v3", "auth_url: want http://"},
		{"swift://c/p?auth_url=http://u:secret@x/v3", "without credentials"},
		{"swift://c/p?auth_url=http://u:secret@x/v3&bad=1", "without credentials"},
		{"swift://c/p?auth_version=4", "want 1, 2 or 3"},
		{"swift://c/p?region=a&region=b", "given 2 times"},
		{"azure:container/x", "write azure://"},
		{"azure://", "no container"},
		{"azure:///prefix", "no container"},
		{"azure://acct:secret@container/p", "credentials do not belong in the URL"},
		{"azure://container:10000/p", "give the server as ?endpoint="},
		{"azure://Backups/p", "lower-case letters"},
		{"azure://ab/p", "lower-case letters"},
		{"azure://a--b/p", "lower-case letters"},
		{"azure://c_1/p", "lower-case letters"},
		{"azure://cont/p?sas=sv%3D1%26sig%3Dsecret", `unknown parameter "sas"`},
		{"azure://cont/p?key=secret", `unknown parameter "key"`},
		{"azure://cont/p?endpoint=ftp://x", "want http://host:port/account"},
		{"azure://cont/p?endpoint=http://h/a?sig=secret", "a SAS goes in AZURE_STORAGE_SAS_TOKEN"},
		{"azure://cont/p?account=a&account=b", "given 2 times"},
		{"azure://cont/p?endpoint=http://h/a?sig=secret&foo=1", `unknown parameter "foo"`},
		{"gs:bucket/x", "write gs://"},
		{"gs://", "no bucket"},
		{"gs:///prefix", "no bucket"},
		{"gs://key:secret@bkt/p", "credentials do not belong in the URL"},
		{"gs://bkt:4443/p", "give an emulator as ?endpoint="},
		{"gs://bkt/p?credentials=/k.json", `unknown parameter "credentials"`},
		{"gs://bkt/p?endpoint=ftp://x", "want http://host:port"},
		{"gs://bkt/p?endpoint=http://u:secret@x", "want http://host:port"},
		{"gs://bkt/p?project=a&project=b", "given 2 times"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got, err := all.ParseURL(tc.url)
			if err == nil {
				t.Fatalf("ParseURL = %+v, want an error containing %q", got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseURL: %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), ":pw@") {
				t.Errorf("error shows a secret: %q", err)
			}
		})
	}
}

func roundtrip(t *testing.T, b backend.Backend) {
	t.Helper()
	ctx := t.Context()
	h := backend.Handle{Type: backend.ConfigFile}
	if err := b.Save(ctx, h, []byte("config")); err != nil {
		t.Fatal(err)
	}
	got, err := b.Load(ctx, h, 0, 0)
	if err != nil || string(got) != "config" {
		t.Fatalf("Load: %q, %v", got, err)
	}
	if _, ok := b.(*retry.Backend); !ok {
		t.Errorf("Open returned %T, want it wrapped in *retry.Backend", b)
	}
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{dir + "/a", "file://" + dir + "/b"} {
		b, err := all.Open(t.Context(), u, all.Options{})
		if err != nil {
			t.Fatal(err)
		}
		roundtrip(t, b)
		if !strings.HasPrefix(b.Location(), "file://"+dir) {
			t.Errorf("Location() = %q", b.Location())
		}
		b.Close()
	}
}

func TestOpenS3(t *testing.T) {
	srv := minio.Start(t)
	srv.SetEnv(t)
	b, err := all.Open(t.Context(), srv.URL("viaurl"), all.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roundtrip(t, b)
	if loc := b.Location(); strings.Contains(loc, srv.SecretKey) || strings.Contains(loc, srv.AccessKey) {
		t.Errorf("Location() %q shows credentials", loc)
	}

	// Create makes a missing bucket.
	u := strings.Replace(srv.URL("p"), "s3://"+srv.Bucket+"/", "s3://fresh-bucket/", 1)
	nb, err := all.Open(t.Context(), u, all.Options{Create: true})
	if err != nil {
		t.Fatalf("Open with Create: %v", err)
	}
	defer nb.Close()
	roundtrip(t, nb)
}

func TestOpenS3UnreachableRetriesThenOneError(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	var retries, giveUps atomic.Int64
	var gaveUp atomic.Value
	b, err := all.Open(t.Context(), "s3://bkt/p?endpoint=http://127.0.0.1:1&region=us-east-1&path_style=true", all.Options{
		Retry: retry.Options{
			MaxAttempts:  4,
			InitialDelay: time.Millisecond,
			OnRetry:      func(string, backend.Handle, int, error) { retries.Add(1) },
			OnGiveUp: func(op string, h backend.Handle, err error) {
				giveUps.Add(1)
				gaveUp.Store(op + " " + h.String())
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Save(t.Context(), backend.Handle{Type: backend.ConfigFile}, []byte("x"))
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "giving up after 4 attempts") || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Save to a closed port: %v", err)
	}
	if retries.Load() != 3 || giveUps.Load() != 1 || gaveUp.Load() != "save config" {
		t.Errorf("retries %d, give-ups %d (%v); want 3, 1 (save config)", retries.Load(), giveUps.Load(), gaveUp.Load())
	}
}

func TestOpenGCS(t *testing.T) {
	srv := fakegcs.Start(t)
	b, err := all.Open(t.Context(), srv.URL("viaurl"), all.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roundtrip(t, b)
	if got, want := b.Location(), "gs://"+srv.Bucket+"/viaurl ("+srv.Endpoint+")"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}

	// Create makes a missing bucket, in the URL's project.
	u := strings.Replace(srv.URL("p"), "gs://"+srv.Bucket+"/", "gs://fresh-bucket/", 1) + "&project=" + fakegcs.Project
	nb, err := all.Open(t.Context(), u, all.Options{Create: true})
	if err != nil {
		t.Fatalf("Open with Create: %v", err)
	}
	defer nb.Close()
	roundtrip(t, nb)
}

func TestOpenAzure(t *testing.T) {
	srv := azurite.Start(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		url  string
	}{
		{"account key", map[string]string{azure.EnvAccount: azurite.Account, azure.EnvKey: azurite.Key}, srv.URL("viakey")},
		{"connection string", map[string]string{azure.EnvConnectionString: srv.ConnectionString()}, "azure://" + srv.Container + "/viacs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{azure.EnvAccount, azure.EnvKey, azure.EnvSASToken, azure.EnvConnectionString} {
				t.Setenv(k, tc.env[k])
			}
			b, err := all.Open(t.Context(), tc.url, all.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			roundtrip(t, b)
			if loc := b.Location(); strings.Contains(loc, azurite.Key) || !strings.Contains(loc, srv.Endpoint) {
				t.Errorf("Location() = %q: want the endpoint and no key", loc)
			}
		})
	}

	// Create makes a missing container.
	srv.SetEnv(t)
	u := strings.Replace(srv.URL("p"), "azure://"+srv.Container+"/", "azure://fresh-container/", 1)
	nb, err := all.Open(t.Context(), u, all.Options{Create: true})
	if err != nil {
		t.Fatalf("Open with Create: %v", err)
	}
	defer nb.Close()
	roundtrip(t, nb)
}

func TestOpenSFTP(t *testing.T) {
	srv := sshd.Start(t)
	dir := t.TempDir()
	b, err := all.Open(t.Context(), srv.URL(dir), all.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roundtrip(t, b)
	if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
		t.Errorf("config not stored in %s: %v", dir, err)
	}
}

func TestOpenSwift(t *testing.T) {
	srv := swiftaio.Start(t)
	srv.SetEnv(t)
	b, err := all.Open(t.Context(), srv.URL("viaurl"), all.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roundtrip(t, b)
	if loc := b.Location(); strings.Contains(loc, swiftaio.Key) {
		t.Errorf("Location() %q shows the key", loc)
	}

	// Create makes a missing container; auth_url in the URL wins over
	// ST_AUTH.
	t.Setenv("ST_AUTH", "http://127.0.0.1:1/auth/v1.0")
	nb, err := all.Open(t.Context(), "swift://fresh-container/p?auth_url="+srv.AuthURL, all.Options{Create: true})
	if err != nil {
		t.Fatalf("Open with Create: %v", err)
	}
	defer nb.Close()
	roundtrip(t, nb)
}

func TestOpenSFTPWithMissingKnownHosts(t *testing.T) {
	_, err := all.Open(context.Background(), "sftp://u@127.0.0.1:2222/x?identity=/nonexistent&known_hosts=/nonexistent/kh", all.Options{})
	if err == nil || !backend.IsPermanent(err) || !strings.Contains(err.Error(), "known_hosts file /nonexistent/kh does not exist") {
		t.Fatalf("Open: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "open repository sftp://u@127.0.0.1:2222/x") {
		t.Errorf("error %q does not name the repository", err)
	}
}

func TestParseURLErrorsMatchErrBadURL(t *testing.T) {
	for _, raw := range []string{"ftp://host/x", "s3://", "sftp://host:notaport/x", "file://relative", "swift://", "swift://c/p?auth_url=x", "azure://", "azure://UPPER/x"} {
		if _, err := all.ParseURL(raw); !errors.Is(err, all.ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want an error matching ErrBadURL", raw, err)
		}
	}
}
