package repo

import (
	"container/list"
	"context"
	"sync"

	"github.com/pgvault/pgvault/chunk"
)

// blobCache keeps decrypted blobs in memory, bounded by total bytes, and
// merges concurrent loads of the same blob into one backend read. Cached
// slices are shared: callers must not modify them.
type blobCache struct {
	mu       sync.Mutex
	maxBytes int64
	size     int64
	lru      *list.List // front = most recent; values are *cacheEntry
	entries  map[chunk.ID]*list.Element
	loading  map[chunk.ID]*inflight
	hits     int64
	misses   int64
}

type cacheEntry struct {
	id   chunk.ID
	data []byte
}

type inflight struct {
	done chan struct{}
	data []byte
	err  error
}

func newBlobCache(maxBytes int64) *blobCache {
	return &blobCache{
		maxBytes: maxBytes,
		lru:      list.New(),
		entries:  map[chunk.ID]*list.Element{},
		loading:  map[chunk.ID]*inflight{},
	}
}

// get returns the blob, calling load at most once however many goroutines
// ask for it at the same time. A waiter whose ctx ends stops waiting; the
// load itself goes on for the others.
func (c *blobCache) get(ctx context.Context, id chunk.ID, load func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.entries[id]; ok {
		c.lru.MoveToFront(el)
		c.hits++
		c.mu.Unlock()
		return el.Value.(*cacheEntry).data, nil
	}
	if f, ok := c.loading[id]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.data, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.misses++
	f := &inflight{done: make(chan struct{})}
	c.loading[id] = f
	c.mu.Unlock()

	f.data, f.err = load()

	c.mu.Lock()
	delete(c.loading, id)
	if f.err == nil {
		c.addLocked(id, f.data)
	}
	c.mu.Unlock()
	close(f.done)
	return f.data, f.err
}

// peek returns a cached blob without loading or reordering anything.
func (c *blobCache) peek(id chunk.ID) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[id]; ok {
		return el.Value.(*cacheEntry).data, true
	}
	return nil, false
}

// put adds a blob the caller already has (e.g. one it just wrote).
func (c *blobCache) put(id chunk.ID, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[id]; !ok {
		c.addLocked(id, data)
	}
}

func (c *blobCache) addLocked(id chunk.ID, data []byte) {
	if int64(len(data)) > c.maxBytes/4 {
		return // one huge blob must not flush everything else
	}
	c.entries[id] = c.lru.PushFront(&cacheEntry{id: id, data: data})
	c.size += int64(len(data))
	for c.size > c.maxBytes {
		el := c.lru.Back()
		e := el.Value.(*cacheEntry)
		c.lru.Remove(el)
		delete(c.entries, e.id)
		c.size -= int64(len(e.data))
	}
}

// stats returns hits and misses so far.
func (c *blobCache) stats() (hits, misses int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
