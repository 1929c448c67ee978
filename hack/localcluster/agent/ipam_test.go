package agent

import (
	"errors"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestIPAM(t *testing.T) {
	t.Run("rejects non-loopback and tiny ranges", func(t *testing.T) {
		for _, cidr := range []string{"10.0.0.0/24", "127.0.0.0/31", "bogus"} {
			if _, err := newIPAM(cidr); err == nil {
				t.Errorf("newIPAM(%q) accepted", cidr)
			}
		}
	})
	t.Run("stable per pod, unique, skips special addresses, reuses released", func(t *testing.T) {
		m, err := newIPAM("127.0.40.0/24")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]types.UID{}
		for i := range 254 { // .1 to .254
			uid := types.UID(fmt.Sprint("pod-", i))
			ip, err := m.allocate(uid, "")
			if err != nil {
				t.Fatalf("allocation %d: %v", i, err)
			}
			if ip == "127.0.40.0" || ip == "127.0.40.255" {
				t.Fatalf("allocated special address %s", ip)
			}
			if other, dup := seen[ip]; dup {
				t.Fatalf("%s given to %s and %s", ip, other, uid)
			}
			seen[ip] = uid
			if again, _ := m.allocate(uid, ""); again != ip {
				t.Fatalf("second allocation for %s: %s, want %s", uid, again, ip)
			}
		}
		if _, err := m.allocate("one-too-many", ""); !errors.Is(err, errPoolExhausted) {
			t.Fatalf("want exhaustion, got %v", err)
		}
		m.release("pod-7")
		ip, err := m.allocate("newcomer", "")
		if err != nil || seen[ip] != "pod-7" {
			t.Fatalf("after release got %s (%v), want pod-7's address", ip, err)
		}
	})
	t.Run("keeps the preferred address when free", func(t *testing.T) {
		m, _ := newIPAM("127.0.40.0/24")
		if ip, _ := m.allocate("a", "127.0.40.77"); ip != "127.0.40.77" {
			t.Errorf("got %s, want the preferred 127.0.40.77", ip)
		}
		if ip, _ := m.allocate("b", "127.0.40.77"); ip == "127.0.40.77" {
			t.Errorf("preferred address given twice")
		}
		if ip, _ := m.allocate("c", "127.0.99.1"); ip == "127.0.99.1" {
			t.Errorf("out-of-range preference honoured")
		}
	})
}
