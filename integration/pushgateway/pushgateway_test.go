package pushgateway_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/model"

	"github.com/pgvault/pgvault/integration/pushgateway"
)

func TestPushAndReadBack(t *testing.T) {
	srv := pushgateway.Start(t)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "smoke_value", Help: "a test gauge"})
	g.Set(42)
	if err := push.New(srv.URL, "smoke").Collector(g).Grouping("instance", "here").PushContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	fams, err := srv.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := pushgateway.Value(fams, "smoke_value", model.LabelSet{"job": "smoke", "instance": "here"}); !ok || v != 42 {
		t.Fatalf("smoke_value = %v (found %v)", v, ok)
	}
	srv.Stop()
	if _, err := srv.Metrics(); err == nil {
		t.Fatal("a stopped Pushgateway answered")
	}
}
