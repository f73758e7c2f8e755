package inferlb

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const headerPath = "../../../include/inferlb/inferlb.h"

// goConsts reads consts.go: every constant's name and integer value.
func goConsts(t *testing.T) map[string]int64 {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "consts.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					t.Fatalf("%s: write the value out", name.Name)
				}
				expr, neg := vs.Values[i], int64(1)
				if u, ok := expr.(*ast.UnaryExpr); ok && u.Op == token.SUB {
					expr, neg = u.X, -1
				}
				lit, ok := expr.(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					t.Fatalf("%s: not an integer literal", name.Name)
				}
				v, err := strconv.ParseInt(lit.Value, 0, 64)
				if err != nil {
					t.Fatal(err)
				}
				out[name.Name] = neg * v
			}
		}
	}
	return out
}

// goName turns a header name's words (after the enum prefix) into the Go
// spelling used in consts.go.
func goName(prefix, rest string) string {
	special := map[string]string{"P2C": "P2C", "GPU": "GPU", "KV": "KV", "MS": "MS",
		"EWMA": "EWMA", "TTFT": "TTFT", "TGI": "TGI", "VLLM": "VLLM", "CHWBL": "CHWBL",
		"HTTP": "HTTP", "OK": "OK", "ID": "ID", "MIB": "MiB", "SGLANG": "SGLang",
		"LLAMACPP": "LlamaCpp", "TTL": "TTL"}
	var b strings.Builder
	b.WriteString(prefix)
	for _, w := range strings.Split(rest, "_") {
		if s, ok := special[w]; ok {
			b.WriteString(s)
		} else if w != "" {
			b.WriteString(w[:1] + strings.ToLower(w[1:]))
		}
	}
	return b.String()
}

func TestConstantsMatchHeader(t *testing.T) {
	src, err := os.ReadFile(headerPath)
	if err != nil {
		t.Fatal(err)
	}
	header := string(src)
	gc := goConsts(t)
	check := func(cname, gname string, want int64) {
		t.Helper()
		got, ok := gc[gname]
		if !ok {
			t.Errorf("%s = %d: no Go constant %s in consts.go", cname, want, gname)
		} else if got != want {
			t.Errorf("%s = %d but Go %s = %d", cname, want, gname, got)
		}
	}

	// Error codes, with their text as ilb_strerror gives it.
	errRe := regexp.MustCompile(`X\((\w+),\s*(-?\d+),\s*"([^"]*)"\)`)
	errs := errRe.FindAllStringSubmatch(header, -1)
	if len(errs) < 17 {
		t.Fatalf("found %d ILB_ERRNO_MAP entries", len(errs))
	}
	for _, m := range errs {
		v, _ := strconv.ParseInt(m[2], 10, 64)
		check("ILB_"+m[1], m[1], v)
		e, ok := ErrorFor(int(v)).(*Error)
		if !ok || e.Name != m[1] || e.Message != m[3] {
			t.Errorf("ErrorFor(%d) = %#v, want %s %q", v, ErrorFor(int(v)), m[1], m[3])
		}
		if -int(v) >= len(errByCode) {
			t.Errorf("no Err* sentinel for ILB_%s", m[1])
		}
	}

	enums := []struct{ enum, cprefix, goprefix string }{
		{"ilb_option", "ILB_OPT_", "Opt"},
		{"ilb_policy_id", "ILB_POLICY_", "Policy"},
		{"ilb_outcome_status", "ILB_OUTCOME_", "Outcome"},
		{"ilb_signal", "ILB_SIGNAL_", "Signal"},
		{"ilb_dialect", "ILB_DIALECT_", "Dialect"},
		{"ilb_replica_state", "ILB_REPLICA_", "State"},
		{"ilb_event_type", "ILB_EVENT_", "Event"},
		{"ilb_log_level", "ILB_LOG_", "Log"},
		{"ilb_no_key", "ILB_NO_KEY_", "NoKey"},
		{"ilb_all_stale", "ILB_ALL_STALE_", "AllStale"},
		// since 0.4
		{"ilb_reason", "ILB_REASON_", "Reason"},
		{"ilb_health", "ILB_HEALTH_", "Health"},
		{"ilb_probe_result", "ILB_PROBE_", "Probe"},
		{"ilb_breaker", "ILB_BREAKER_", "Breaker"},
		{"ilb_excluded", "ILB_EXCLUDED_", "Excluded"},
		{"ilb_due_kind", "ILB_DUE_", "Due"},
		{"ilb_retry_on", "ILB_RETRY_ON_", "RetryOn"},
		{"ilb_retry_verdict", "ILB_RETRY_", "Retry"},
		{"ilb_priority", "ILB_PRIORITY_", "Priority"},
		// since 0.5
		{"ilb_prefix_mode", "ILB_PREFIX_", "Prefix"},
		{"ilb_kv_event_type", "ILB_KV_", "KV"},
		// since 0.6
		{"ilb_pool_role", "ILB_ROLE_", "Role"},
		{"ilb_match_kind", "ILB_MATCH_", "Match"},
	}
	comments := regexp.MustCompile(`(?s)/\*.*?\*/`)
	// Every enum of the header is compared below (ilb_errno: above).
	listed := map[string]bool{"ilb_errno": true}
	for _, e := range enums {
		listed[e.enum] = true
	}
	for _, m := range regexp.MustCompile(`\benum (ilb_\w+) \{`).FindAllStringSubmatch(header, -1) {
		if !listed[m[1]] {
			t.Errorf("enum %s of the header is not checked: add it (and its constants)", m[1])
		}
	}
	for _, e := range enums {
		body := regexp.MustCompile(`(?s)enum ` + e.enum + ` \{(.*?)\};`).FindStringSubmatch(header)
		if body == nil {
			t.Errorf("enum %s not found in the header", e.enum)
			continue
		}
		vals := regexp.MustCompile(`\b(ILB_\w+)\s*=\s*(-?\d+)`).FindAllStringSubmatch(comments.ReplaceAllString(body[1], ""), -1)
		if len(vals) == 0 {
			t.Errorf("enum %s: no values", e.enum)
		}
		for _, m := range vals {
			if !strings.HasPrefix(m[1], e.cprefix) {
				t.Errorf("enum %s: %s lacks prefix %s", e.enum, m[1], e.cprefix)
				continue
			}
			v, _ := strconv.ParseInt(m[2], 10, 64)
			check(m[1], goName(e.goprefix, strings.TrimPrefix(m[1], e.cprefix)), v)
		}
	}

	defines := map[string]string{"ILB_THREAD_TICKETS": "ThreadTickets", "ILB_ID_MAX": "IDMax",
		"ILB_WEIGHT_MAX": "WeightMax", "ILB_LABELS_MAX": "LabelsMax", "ILB_SIGNAL_COUNT": "SignalCount",
		"ILB_VERSION_MAJOR": "VersionMajor", "ILB_VERSION_MINOR": "VersionMinor",
		"ILB_RETRY_TRIED_MAX": "RetryTriedMax", "ILB_PREFIX_HOLDERS": "PrefixHolders",
		"ILB_ROUTER_POOLS_MAX": "RouterPoolsMax", "ILB_ROUTE_BACKENDS_MAX": "RouteBackendsMax",
		"ILB_ROUTE_MATCHES_MAX": "RouteMatchesMax", "ILB_ROUTES_MAX": "RoutesMax",
		"ILB_RATE_LIMITS_MAX": "RateLimitsMax"}
	for cname, gname := range defines {
		m := regexp.MustCompile(`#define ` + cname + `\s+(\d+)u?\b`).FindStringSubmatch(header)
		if m == nil {
			t.Errorf("#define %s not found", cname)
			continue
		}
		v, _ := strconv.ParseInt(m[1], 10, 64)
		if gname == "VersionMinor" {
			// The binding may be older than the header: minor only grows.
			if gc[gname] > v {
				t.Errorf("VersionMinor %d > header's %d", gc[gname], v)
			}
			continue
		}
		check(cname, gname, v)
	}
}

// Every exported symbol of the library is called by the binding, or is
// listed here with the reason it is not.
var deliberatelyUnused = map[string]string{}

func TestEverySymbolWrapped(t *testing.T) {
	syms, err := os.ReadFile("../../../tests/abi/symbols.txt")
	if err != nil {
		t.Fatal(err)
	}
	var src strings.Builder
	files, _ := filepath.Glob("*.go")
	cfiles, _ := filepath.Glob("*.c")
	for _, f := range append(files, cfiles...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".c") {
			// In C the call is name(; make it look like the Go form.
			b = regexp.MustCompile(`\b(ilb_\w+)\(`).ReplaceAll(b, []byte("C.$1("))
		}
		src.Write(b)
	}
	all := src.String()
	n := 0
	for _, s := range strings.Fields(string(syms)) {
		n++
		if _, ok := deliberatelyUnused[s]; ok {
			continue
		}
		if !regexp.MustCompile(`\bC\.` + s + `\(`).MatchString(all) {
			t.Errorf("%s is exported by the library but not called by the binding", s)
		}
	}
	if n < 40 {
		t.Fatalf("only %d symbols read", n)
	}
}
