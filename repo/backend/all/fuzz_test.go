package all_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgvault/pgvault/repo/backend/all"
)

// FuzzParseURL parses repository URLs (from --repo, PGVAULT_REPO and
// configuration files): anything must give a location or an error that
// matches ErrBadURL, and no error may echo a password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"/srv/repo", "file:///srv/repo", "file://host/x", "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true",
		"s3://key:supersecret@bucket/x", "sftp://user@host:2222/srv/repo?identity=/k&known_hosts=/kh", "sftp://user:supersecret@host/x",
		"gs://bucket/prefix?endpoint=http://127.0.0.1:4443&project=p", "gs://key:supersecret@bucket/x", "gs://b/p?endpoint=http://u:supersecret@h",
		"ftp://host/x", "", "c:repo", "s3:bucket", "sftp://host", "s3://b/p?endpoint=%zz",
		"azure://container/prefix?account=devstoreaccount1&endpoint=http://127.0.0.1:10000/devstoreaccount1",
		"azure://acct:supersecret@container/x", "azure://Bad_Name/x", "azure:container", "azure://c0n/p?endpoint=http://h/a?sig=supersecret",
		"swift://container/prefix?auth_url=https://keystone:5000/v3&region=RegionOne&auth_version=3",
		"swift://user:supersecret@container/x", "swift://c/p?auth_url=http://u:supersecret@h/v3&x=1", "swift:c", "swift://c:1/p",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		loc, err := all.ParseURL(raw)
		if err != nil {
			if !errors.Is(err, all.ErrBadURL) {
				t.Fatalf("ParseURL(%q): error %v does not match ErrBadURL", raw, err)
			}
			// A password in a URL's user info (scheme://user:password@)
			// must not be echoed.
			if i := strings.Index(raw, "://"); i >= 0 && strings.Contains(raw[i:], ":supersecret@") && strings.Contains(err.Error(), "supersecret") {
				t.Fatalf("ParseURL(%q): the error shows the password: %v", raw, err)
			}
			return
		}
		switch loc.Scheme {
		case all.SchemeFile:
			if !strings.HasPrefix(loc.Path, "/") {
				t.Fatalf("ParseURL(%q): relative folder %q", raw, loc.Path)
			}
		case all.SchemeS3:
			if loc.S3.Bucket == "" {
				t.Fatalf("ParseURL(%q): no bucket", raw)
			}
		case all.SchemeGCS:
			if loc.GCS.Bucket == "" {
				t.Fatalf("ParseURL(%q): no bucket", raw)
			}
		case all.SchemeSFTP:
			if loc.SFTP.Host == "" || loc.SFTP.Path == "" {
				t.Fatalf("ParseURL(%q): no host or path: %+v", raw, loc.SFTP)
			}
		case all.SchemeAzure:
			if loc.Azure.Container == "" {
				t.Fatalf("ParseURL(%q): no container", raw)
			}
			if loc.Azure.Key != "" || loc.Azure.SASToken != "" || loc.Azure.ConnectionString != "" {
				t.Fatalf("ParseURL(%q): credentials taken from the URL: %+v", raw, loc.Azure)
			}
		case all.SchemeSwift:
			if loc.Swift.Container == "" || strings.Contains(loc.Swift.Container, "/") {
				t.Fatalf("ParseURL(%q): bad container %q", raw, loc.Swift.Container)
			}
			if loc.Swift.User != "" || loc.Swift.Key != "" {
				t.Fatalf("ParseURL(%q): credentials taken from the URL", raw)
			}
		default:
			t.Fatalf("ParseURL(%q): scheme %q", raw, loc.Scheme)
		}
	})
}
