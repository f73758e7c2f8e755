package inferlb

/*
#include "shim.h"
*/
import "C"

import (
	"sync"
	"unsafe"
)

// Telemetry is what a replica's server says about itself (ilb_telemetry):
// one field per Signal, each set only when its bit is in Present.
type Telemetry struct {
	Present   uint64 // SignalBit()s of the fields that are set
	Stale     uint64 // output: present signals whose age reached the maximum
	Timestamp uint64 // host clock when measured, ns; 0 = now

	RequestsWaiting float64
	RequestsRunning float64
	KVCacheUsage    float64 // 0..1
	GPUUtilization  float64 // 0..1
	GPUMemoryFree   float64 // bytes
	GPUMemoryTotal  float64 // bytes
	PrefixHitRate   float64 // 0..1
	GenTokensPerS   float64
	TTFT            float64 // seconds
	QueueTime       float64 // seconds
	RequestRate     float64
	MaxConcurrency  float64
	ModelReady      float64 // 0 or 1
	KVBlockSize     float64
	KVBlocksTotal   float64
}

// SignalBit is ILB_SIGNAL_BIT(s).
func SignalBit(s Signal) uint64 { return 1 << uint(s) }

func (t *Telemetry) field(s Signal) *float64 {
	switch s {
	case SignalRequestsWaiting:
		return &t.RequestsWaiting
	case SignalRequestsRunning:
		return &t.RequestsRunning
	case SignalKVCacheUsage:
		return &t.KVCacheUsage
	case SignalGPUUtilization:
		return &t.GPUUtilization
	case SignalGPUMemoryFree:
		return &t.GPUMemoryFree
	case SignalGPUMemoryTotal:
		return &t.GPUMemoryTotal
	case SignalPrefixHitRate:
		return &t.PrefixHitRate
	case SignalGenTokensPerS:
		return &t.GenTokensPerS
	case SignalTTFT:
		return &t.TTFT
	case SignalQueueTime:
		return &t.QueueTime
	case SignalRequestRate:
		return &t.RequestRate
	case SignalMaxConcurrency:
		return &t.MaxConcurrency
	case SignalModelReady:
		return &t.ModelReady
	case SignalKVBlockSize:
		return &t.KVBlockSize
	case SignalKVBlocksTotal:
		return &t.KVBlocksTotal
	}
	return nil
}

// Set sets a signal's value and its Present bit. Unknown signals are ignored.
func (t *Telemetry) Set(s Signal, v float64) {
	if f := t.field(s); f != nil {
		*f = v
		t.Present |= SignalBit(s)
	}
}

// Get is a signal's value and whether it is present.
func (t *Telemetry) Get(s Signal) (float64, bool) {
	if f := t.field(s); f != nil && t.Present&SignalBit(s) != 0 {
		return *f, true
	}
	return 0, false
}

func (t *Telemetry) toC(c *C.ilb_telemetry) {
	C.ilb_telemetry_init(c)
	c.present = C.uint64_t(t.Present)
	c.timestamp_ns = C.uint64_t(t.Timestamp)
	c.requests_waiting = C.double(t.RequestsWaiting)
	c.requests_running = C.double(t.RequestsRunning)
	c.kv_cache_usage = C.double(t.KVCacheUsage)
	c.gpu_utilization = C.double(t.GPUUtilization)
	c.gpu_memory_free = C.double(t.GPUMemoryFree)
	c.gpu_memory_total = C.double(t.GPUMemoryTotal)
	c.prefix_hit_rate = C.double(t.PrefixHitRate)
	c.gen_tokens_per_s = C.double(t.GenTokensPerS)
	c.ttft_s = C.double(t.TTFT)
	c.queue_time_s = C.double(t.QueueTime)
	c.request_rate = C.double(t.RequestRate)
	c.max_concurrency = C.double(t.MaxConcurrency)
	c.model_ready = C.double(t.ModelReady)
	c.kv_block_size = C.double(t.KVBlockSize)
	c.kv_blocks_total = C.double(t.KVBlocksTotal)
}

func telemetryFromC(c *C.ilb_telemetry) Telemetry {
	return Telemetry{
		Present: uint64(c.present), Stale: uint64(c.stale), Timestamp: uint64(c.timestamp_ns),
		RequestsWaiting: float64(c.requests_waiting), RequestsRunning: float64(c.requests_running),
		KVCacheUsage: float64(c.kv_cache_usage), GPUUtilization: float64(c.gpu_utilization),
		GPUMemoryFree: float64(c.gpu_memory_free), GPUMemoryTotal: float64(c.gpu_memory_total),
		PrefixHitRate: float64(c.prefix_hit_rate), GenTokensPerS: float64(c.gen_tokens_per_s),
		TTFT: float64(c.ttft_s), QueueTime: float64(c.queue_time_s),
		RequestRate: float64(c.request_rate), MaxConcurrency: float64(c.max_concurrency),
		ModelReady: float64(c.model_ready), KVBlockSize: float64(c.kv_block_size),
		KVBlocksTotal: float64(c.kv_blocks_total),
	}
}

// Report records the present signals of t for a replica
// (ilb_replica_report); all or nothing. ErrRange for a bad value,
// ErrInvalid for an unknown Present bit, ErrNotFound.
func (p *Pool) Report(id string, t Telemetry) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	var ct C.ilb_telemetry
	t.toC(&ct)
	return ret(C.ilbgo_replica_report(p.ptr, cid, &ct))
}

// Telemetry is the signals last reported for a replica
// (ilb_replica_telemetry), with Stale set for those too old.
func (p *Pool) Telemetry(id string) (Telemetry, error) {
	if p.ptr == nil {
		return Telemetry{}, errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	var ct C.ilb_telemetry
	C.ilb_telemetry_init(&ct)
	if err := ret(C.ilbgo_replica_telemetry(&ct, p.ptr, cid)); err != nil {
		return Telemetry{}, err
	}
	return telemetryFromC(&ct), nil
}

// String is the signal's name ("kv_cache_usage"), or "Signal(n)".
func (s Signal) String() string {
	if n := C.ilb_signal_name(C.int32_t(s)); n != nil {
		return C.GoString(n)
	}
	return "Signal(" + itoa(int64(s)) + ")"
}

// String is the dialect's name ("vllm"), or "Dialect(n)".
func (d Dialect) String() string {
	if n := C.ilb_dialect_name(C.int32_t(d)); n != nil {
		return C.GoString(n)
	}
	return "Dialect(" + itoa(int64(d)) + ")"
}

// ScrapeConfig configures NewScrape; the zero value is the defaults.
type ScrapeConfig struct {
	Dialect    Dialect // DialectAuto: the first recognised metric decides
	LabelKey   string  // "" = the dialect's model label
	LabelValue string  // "" = no model filter
	LineMax    int     // longest line, 0 = default (65536)
}

// Scrape parses one replica's /metrics pages into Telemetry (ilb_scrape);
// keep one per replica, since rates are computed between pages. Its methods
// lock, so it may be shared, but pages must not interleave.
type Scrape struct {
	mu  sync.Mutex
	ptr *C.ilb_scrape
}

// NewScrape creates a parser (ilb_scrape_new). Close frees it.
func NewScrape(cfg ScrapeConfig) (*Scrape, error) {
	if err := CheckVersion(); err != nil {
		return nil, err
	}
	var cc C.ilb_scrape_config
	C.ilb_scrape_config_init(&cc)
	cc.dialect = C.int32_t(cfg.Dialect)
	if cfg.LabelKey != "" {
		cc.label_key = C.CString(cfg.LabelKey)
		defer C.free(unsafe.Pointer(cc.label_key))
	}
	if cfg.LabelValue != "" {
		cc.label_value = C.CString(cfg.LabelValue)
		defer C.free(unsafe.Pointer(cc.label_value))
	}
	if cfg.LineMax > 0 {
		cc.line_max = C.size_t(cfg.LineMax)
	}
	s := &Scrape{}
	if rc := C.ilb_scrape_new(&s.ptr, &cc, nil); rc != 0 {
		return nil, errFor(rc)
	}
	return s, nil
}

// Close frees the parser; closing twice is a no-op.
func (s *Scrape) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	C.ilb_scrape_free(s.ptr)
	s.ptr = nil
}

// parseError adds where the last ILB_EPARSE happened to the error.
func (s *Scrape) parseError(rc C.int) error {
	if rc != C.ILB_EPARSE {
		return errFor(rc)
	}
	var line C.uint64_t
	var what *C.char
	if C.ilb_scrape_error(&line, &what, s.ptr) != 0 || what == nil {
		return ErrParse
	}
	e := *ErrParse
	e.Message += ": line " + itoa(int64(line)) + ": " + C.GoString(what)
	return &e
}

// Feed parses the next piece of the page (ilb_scrape_feed); a page may be
// fed in any number of pieces split anywhere. ErrParse (with the line).
func (s *Scrape) Feed(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return errPoolClosed
	}
	var p *C.char
	if len(data) > 0 {
		p = (*C.char)(unsafe.Pointer(&data[0]))
	}
	return s.parseError(C.ilb_scrape_feed(s.ptr, p, C.size_t(len(data))))
}

// Finish ends the page (ilb_scrape_finish) and returns what it said.
// timestampNs: host clock when the page was fetched (0 = now, on
// CLOCK_MONOTONIC). ErrNotFound when no metric of the dialect was found.
func (s *Scrape) Finish(timestampNs uint64) (Telemetry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return Telemetry{}, errPoolClosed
	}
	var ct C.ilb_telemetry
	C.ilb_telemetry_init(&ct)
	if rc := C.ilb_scrape_finish(&ct, s.ptr, C.uint64_t(timestampNs)); rc != 0 {
		return Telemetry{}, s.parseError(rc)
	}
	return telemetryFromC(&ct), nil
}

// Parse is Feed(text) then Finish(timestampNs) in one call
// (ilb_telemetry_parse).
func (s *Scrape) Parse(text []byte, timestampNs uint64) (Telemetry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return Telemetry{}, errPoolClosed
	}
	var p *C.char
	if len(text) > 0 {
		p = (*C.char)(unsafe.Pointer(&text[0]))
	}
	var ct C.ilb_telemetry
	C.ilb_telemetry_init(&ct)
	if rc := C.ilb_telemetry_parse(&ct, s.ptr, p, C.size_t(len(text)), C.uint64_t(timestampNs)); rc != 0 {
		return Telemetry{}, s.parseError(rc)
	}
	return telemetryFromC(&ct), nil
}

// Dialect is the dialect in use: as configured, or as detected.
func (s *Scrape) Dialect() (Dialect, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return 0, errPoolClosed
	}
	var d C.int32_t
	rc := C.ilb_scrape_dialect(&d, s.ptr)
	return Dialect(d), errFor(rc)
}
