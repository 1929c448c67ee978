package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ipam hands each pod its own loopback address, so every pod can listen on its usual
// port. Linux routes all of 127.0.0.0/8 to lo, so no interface setup is needed.
type ipam struct {
	mu     sync.Mutex
	prefix netip.Prefix
	byUID  map[types.UID]netip.Addr
	used   map[netip.Addr]types.UID
	next   netip.Addr
}

var errPoolExhausted = errors.New("pod IP range exhausted")

func newIPAM(cidr string) (*ipam, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, fmt.Errorf("parsing pod CIDR: %w", err)
	}
	p = p.Masked()
	if !netip.MustParsePrefix("127.0.0.0/8").Contains(p.Addr()) || p.Bits() < 8 || p.Bits() > 30 {
		return nil, fmt.Errorf("pod CIDR %s must be a loopback range of at least 4 addresses", cidr)
	}
	return &ipam{prefix: p, byUID: map[types.UID]netip.Addr{}, used: map[netip.Addr]types.UID{}, next: p.Addr().Next()}, nil
}

// allocate returns the pod's address, keeping the one it already has (prefer, e.g.
// from its status after an agent restart) when that is in range and free.
func (m *ipam) allocate(uid types.UID, prefer string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.byUID[uid]; ok {
		return a.String(), nil
	}
	if a, err := netip.ParseAddr(prefer); err == nil && m.usable(a) {
		if _, taken := m.used[a]; !taken {
			m.take(uid, a)
			return a.String(), nil
		}
	}
	start := m.next
	for a := start; ; {
		if m.usable(a) {
			if _, taken := m.used[a]; !taken {
				m.take(uid, a)
				m.next = a.Next()
				return a.String(), nil
			}
		}
		a = a.Next()
		if !m.prefix.Contains(a) {
			a = m.prefix.Addr()
		}
		if a == start {
			return "", fmt.Errorf("%s: %w", m.prefix, errPoolExhausted)
		}
	}
}

// usable excludes the network address, the last address and any x.y.z.0/255, which
// some programs treat as special.
func (m *ipam) usable(a netip.Addr) bool {
	if !m.prefix.Contains(a) || a == m.prefix.Addr() {
		return false
	}
	b := a.As4()
	if b[3] == 0 || b[3] == 255 {
		return false
	}
	return m.prefix.Contains(a.Next())
}

func (m *ipam) take(uid types.UID, a netip.Addr) {
	m.byUID[uid] = a
	m.used[a] = uid
}

func (m *ipam) release(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.byUID[uid]; ok {
		delete(m.used, a)
		delete(m.byUID, uid)
	}
}
