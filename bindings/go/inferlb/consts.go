package inferlb

// Constants of include/inferlb/inferlb.h. Every value is written out (no
// iota) so that drift_test.go can read this file and compare it, name by
// name, with the header: a constant added to the header and not here fails
// the test. Names: the header's, without ILB_ and the enum's prefix, in Go
// case (ILB_OPT_P2C_CHOICES -> OptP2CChoices); error codes keep their C
// spelling (ILB_EINVAL -> EINVAL).

// Header version this binding was written against; a library with another
// major version is refused (see CheckVersion).
const (
	VersionMajor = 0
	VersionMinor = 6
)

// Limits.
const (
	ThreadTickets = 32      // ILB_THREAD_TICKETS
	IDMax         = 255     // ILB_ID_MAX: bytes in an id, zone, label
	WeightMax     = 1000000 // ILB_WEIGHT_MAX
	LabelsMax     = 64      // ILB_LABELS_MAX
	SignalCount   = 15      // ILB_SIGNAL_COUNT
	RetryTriedMax = 8       // ILB_RETRY_TRIED_MAX: most attempts per request
	PrefixHolders = 4       // ILB_PREFIX_HOLDERS: replicas one prefix index entry names

	// Since 0.6: the router's limits.
	RouterPoolsMax   = 126  // ILB_ROUTER_POOLS_MAX: pools a router holds over its life
	RouteBackendsMax = 16   // ILB_ROUTE_BACKENDS_MAX: backends of a route
	RouteMatchesMax  = 16   // ILB_ROUTE_MATCHES_MAX: matches of a route
	RoutesMax        = 1024 // ILB_ROUTES_MAX: routes of a router
	RateLimitsMax    = 16   // ILB_RATE_LIMITS_MAX: rate limits of a router
)

// Error codes (ILB_ERRNO_MAP). Error.Code holds one of them.
const (
	EINVAL     = -1
	ENOMEM     = -2
	ENOENT     = -3
	EEXIST     = -4
	ENOREPLICA = -5
	ESATURATED = -6
	ESTALE     = -7
	EREMOVED   = -8
	ERANGE     = -9
	EBUSY      = -10
	ETICKETS   = -11
	ESIZE      = -12
	EUNKNOWN   = -13
	EDEADLK    = -14
	ETOOBIG    = -15
	ENOKEY     = -16
	EPARSE     = -17
	ESHED      = -18
	ENOMODEL   = -19 // since 0.6: no pool for the request (Router.Pick)
	ERATELIMIT = -20 // since 0.6: over a rate limit (Router.Pick)
	ENOSPC     = -21 // since 0.6: buffer too small
)

// OptionID is an enum ilb_option: a pool tunable (Pool.SetOption).
type OptionID int32

const (
	OptPolicy              OptionID = 100
	OptP2CChoices          OptionID = 101
	OptMaxInFlight         OptionID = 102
	OptAllowOverCapacity   OptionID = 103
	OptHashNoKey           OptionID = 104
	OptRingVnodes          OptionID = 105
	OptMaglevTableSize     OptionID = 106
	OptHashBalanceFactor   OptionID = 107
	OptTelemetryMaxAgeMS   OptionID = 108
	OptTelemetryAllStale   OptionID = 109
	OptScoreQueue          OptionID = 110
	OptScoreGPU            OptionID = 111
	OptScoreKV             OptionID = 112
	OptScoreLatency        OptionID = 113
	OptScoreMemory         OptionID = 114
	OptScanMax             OptionID = 115
	OptKVSaturationPercent OptionID = 116
	OptGPUMemoryMinFreeMiB OptionID = 117
	OptTiePercent          OptionID = 118
	OptEWMADecayMS         OptionID = 119
	OptEWMADefaultMS       OptionID = 120
	OptEWMAPenaltyMS       OptionID = 121
	OptTokenOutputPercent  OptionID = 122
	OptTokenDefaultCost    OptionID = 123

	// Health and failure handling (since 0.4).
	OptHealthInitial             OptionID = 124
	OptHealthRise                OptionID = 125
	OptHealthFall                OptionID = 126
	OptProbeIntervalMS           OptionID = 127
	OptProbeUnhealthyIntervalMS  OptionID = 128
	OptProbeInitialDelayMS       OptionID = 129
	OptProbeJitterPercent        OptionID = 130
	OptScrapeIntervalMS          OptionID = 131
	OptOutlierConsecutive5xx     OptionID = 132
	OptOutlierConsecutiveGateway OptionID = 133
	OptOutlierIntervalMS         OptionID = 134
	OptOutlierBaseEjectionMS     OptionID = 135
	OptOutlierMaxEjectionMS      OptionID = 136
	OptOutlierJitterPercent      OptionID = 137
	OptOutlierMaxEjectionPercent OptionID = 138
	OptOutlierSuccessRateStdev   OptionID = 139
	OptOutlierFailurePercent     OptionID = 140
	OptOutlierMinHosts           OptionID = 141
	OptOutlierRequestVolume      OptionID = 142
	OptPanicThresholdPercent     OptionID = 143
	OptSlowStartMS               OptionID = 144
	OptSlowStartAggression       OptionID = 145
	OptSlowStartMinWeightPercent OptionID = 146
	OptBreakerConsecutive        OptionID = 147
	OptBreakerErrorPercent       OptionID = 148
	OptBreakerMinRequests        OptionID = 149
	OptBreakerWindowMS           OptionID = 150
	OptBreakerOpenMS             OptionID = 151
	OptBreakerHalfOpenMax        OptionID = 152
	OptBreakerCloseSuccesses     OptionID = 153
	OptPoolMaxInFlight           OptionID = 154
	OptShedPercent               OptionID = 155
	OptRetryAfterMS              OptionID = 156
	OptRetryOn                   OptionID = 157
	OptRetryMaxAttempts          OptionID = 158
	OptRetryBudgetPercent        OptionID = 159
	OptRetryBudgetMinPerS        OptionID = 160
	OptRetryBackoffBaseMS        OptionID = 161
	OptRetryBackoffMaxMS         OptionID = 162

	// Prefix-cache-aware routing (since 0.5; PolicyPrefix).
	OptPrefixBlockBytes    OptionID = 163
	OptPrefixBlockTokens   OptionID = 164
	OptPrefixMaxBlocks     OptionID = 165
	OptPrefixTableBlocks   OptionID = 166
	OptPrefixReplicaTokens OptionID = 167
	OptPrefixMode          OptionID = 168 // PrefixRouted or PrefixEvents
	OptPrefixPrefillWeight OptionID = 169
	OptPrefixLoadWeight    OptionID = 170
	OptPrefixQueueWeight   OptionID = 171
	OptPrefixBoundMin      OptionID = 172

	// Locality (since 0.6): ReplicaSpec.Zone, Request.Zone.
	OptLocality                  OptionID = 173 // 1 on (default), 0 off
	OptLocalityMinHealthyPercent OptionID = 174
	OptLocalitySpillPercent      OptionID = 175

	// The autoscaling signal (since 0.6; Pool.Autoscale).
	OptScaleTargetInFlight    OptionID = 176
	OptScaleTargetQueue       OptionID = 177
	OptScaleTargetUtilization OptionID = 178
	OptScaleUpWindowMS        OptionID = 179
	OptScaleDownWindowMS      OptionID = 180
	OptScaleMinReplicas       OptionID = 181
	OptScaleMaxReplicas       OptionID = 182

	// Router options (since 0.6): Router.SetOption only (a pool refuses
	// them with ErrUnknown).
	OptRouterStickyEntries      OptionID = 200 // 0 = no sticky sessions
	OptRouterStickyTTLMS        OptionID = 201
	OptRouterStickyBoundPercent OptionID = 202
	OptRouterPairsMax           OptionID = 203
	OptRouterRateKeys           OptionID = 204
)

// Policy is an enum ilb_policy_id.
type Policy int32

const (
	PolicyRoundRobin           Policy = 1
	PolicyWeightedRoundRobin   Policy = 2
	PolicyRandom               Policy = 3
	PolicyWeightedRandom       Policy = 4
	PolicyLeastConn            Policy = 5
	PolicyWeightedLeastRequest Policy = 6
	PolicyP2C                  Policy = 7
	PolicyRing                 Policy = 8
	PolicyMaglev               Policy = 9
	PolicyRendezvous           Policy = 10
	PolicyCHWBL                Policy = 11
	PolicyComposite            Policy = 12
	PolicyPeakEWMA             Policy = 13
	PolicyLeastTokens          Policy = 14
	PolicyPrefix               Policy = 15 // since 0.5: prefix-cache-aware
)

// Values of OptHashNoKey (enum ilb_no_key).
const (
	NoKeyLeastRequest int64 = 0
	NoKeyError        int64 = 1
)

// Values of OptTelemetryAllStale (enum ilb_all_stale).
const (
	AllStaleFailOpen  int64 = 0
	AllStaleSaturated int64 = 1
)

// Status is an enum ilb_outcome_status: how a request ended.
type Status int32

const (
	OutcomeOK           Status = 0
	OutcomeConnectError Status = 1
	OutcomeTimeout      Status = 2
	OutcomeHTTPError    Status = 3
	OutcomeCancelled    Status = 4
	OutcomeRefused      Status = 5 // since 0.4: refused before any work, safe to retry
)

// State is an enum ilb_replica_state.
type State int32

const (
	StateActive      State = 1
	StateRemoved     State = 2
	StateUnavailable State = 3
)

// EventType is an enum ilb_event_type.
type EventType int32

const (
	EventReplicaAdded   EventType = 1
	EventReplicaRemoved EventType = 2
	EventReplicaWeight  EventType = 3
	EventReplicaState   EventType = 4
	// Since 0.4 (see Event.Reason).
	EventHealth   EventType = 5  // active health: OldValue -> NewValue are Health
	EventEjected  EventType = 6  // outlier ejection: NewValue = ns, OldValue = count
	EventRestored EventType = 7  // ejection over: OldValue = ns ejected
	EventPanic    EventType = 8  // pool-wide (ReplicaID ""): NewValue 1 on, 0 off
	EventBreaker  EventType = 9  // OldValue -> NewValue are Breaker
	EventDrained  EventType = 10 // NewValue = requests still in flight
)

// LogLevel is an enum ilb_log_level.
type LogLevel int32

const (
	LogNone  LogLevel = 0
	LogError LogLevel = 1
	LogWarn  LogLevel = 2
	LogInfo  LogLevel = 3
	LogDebug LogLevel = 4
)

// Signal is an enum ilb_signal: one field of Telemetry.
type Signal int32

const (
	SignalRequestsWaiting Signal = 0
	SignalRequestsRunning Signal = 1
	SignalKVCacheUsage    Signal = 2
	SignalGPUUtilization  Signal = 3
	SignalGPUMemoryFree   Signal = 4
	SignalGPUMemoryTotal  Signal = 5
	SignalPrefixHitRate   Signal = 6
	SignalGenTokensPerS   Signal = 7
	SignalTTFT            Signal = 8
	SignalQueueTime       Signal = 9
	SignalRequestRate     Signal = 10
	SignalMaxConcurrency  Signal = 11
	SignalModelReady      Signal = 12
	SignalKVBlockSize     Signal = 13
	SignalKVBlocksTotal   Signal = 14
)

// Dialect is an enum ilb_dialect: the model server whose /metrics a Scrape
// reads.
type Dialect int32

const (
	DialectAuto     Dialect = 0
	DialectVLLM     Dialect = 1
	DialectSGLang   Dialect = 2
	DialectLlamaCpp Dialect = 3
	DialectTriton   Dialect = 4
	DialectTGI      Dialect = 5
)

// Reason is an enum ilb_reason: why an Event happened (since 0.4).
type Reason int32

const (
	ReasonNone                Reason = 0
	ReasonProbePassed         Reason = 1
	ReasonProbeFailed         Reason = 2
	ReasonNotReady            Reason = 3
	ReasonConsecutive5xx      Reason = 4
	ReasonConsecutiveGateway  Reason = 5
	ReasonSuccessRate         Reason = 6
	ReasonFailurePercent      Reason = 7
	ReasonEjectionExpired     Reason = 8
	ReasonBreakerConsecutive  Reason = 9
	ReasonBreakerErrorRate    Reason = 10
	ReasonBreakerTimeout      Reason = 11
	ReasonBreakerTrialsPassed Reason = 12
	ReasonBreakerTrialFailed  Reason = 13
	ReasonDrainDone           Reason = 14
	ReasonDrainDeadline       Reason = 15
	ReasonHealthyShare        Reason = 16
	ReasonHost                Reason = 17
)

// Health is an enum ilb_health: a replica's active health. Only
// HealthHealthy replicas are routable.
type Health int32

const (
	HealthUnknown   Health = 0
	HealthHealthy   Health = 1
	HealthUnhealthy Health = 2
	HealthStarting  Health = 3
)

// ProbeResult is an enum ilb_probe_result: a probe's result (Pool.HealthReport).
type ProbeResult int32

const (
	ProbePass     ProbeResult = 0
	ProbeFail     ProbeResult = 1
	ProbeNotReady ProbeResult = 2 // alive, not ready (model loading)
)

// Breaker is an enum ilb_breaker: a replica's circuit breaker state.
type Breaker int32

const (
	BreakerClosed   Breaker = 0
	BreakerOpen     Breaker = 1
	BreakerHalfOpen Breaker = 2
)

// Excluded is a set of enum ilb_excluded bits: what keeps a replica out of
// picks (ReplicaInfo.Excluded).
type Excluded uint32

const (
	ExcludedHost     Excluded = 1
	ExcludedHealth   Excluded = 2
	ExcludedEjected  Excluded = 4
	ExcludedBreaker  Excluded = 8
	ExcludedDraining Excluded = 16
)

// DueKind is an enum ilb_due_kind: what Pool.NextDue asks the host to do.
type DueKind int32

const (
	DueProbe  DueKind = 1 // probe the health endpoint, then HealthReport
	DueScrape DueKind = 2 // fetch /metrics, then Scrape.Parse and Report
)

// Values of OptRetryOn (enum ilb_retry_on), ORed.
const (
	RetryOnConnectError int64 = 1
	RetryOnRefused      int64 = 2
	RetryOnTimeout      int64 = 4
	RetryOn5xx          int64 = 8
	RetryOn429          int64 = 16
)

// Verdict is an enum ilb_retry_verdict: what Pool.Retry decided.
type Verdict int32

const (
	RetryYes          Verdict = 0
	RetryNotRetryable Verdict = 1
	RetryAttempts     Verdict = 2
	RetryBudget       Verdict = 3
	RetryNoReplica    Verdict = 4
)

// Priority is an enum ilb_priority: a request's priority for load shedding.
type Priority int32

const (
	PriorityCritical  Priority = 0 // shed only at the pool's limit (default)
	PrioritySheddable Priority = 1 // shed first, at OptShedPercent of it
)

// Values of OptPrefixMode (enum ilb_prefix_mode, since 0.5): where the
// prefix index learns which replica holds which block.
const (
	PrefixRouted int64 = 0 // from routing (and KV events, if fed) (default)
	PrefixEvents int64 = 1 // from KV events only (Pool.KVEvent)
)

// KVEventType is an enum ilb_kv_event_type (since 0.5): a server's
// KV-cache event (vLLM's BlockStored, BlockRemoved, AllBlocksCleared).
type KVEventType int32

const (
	KVStored  KVEventType = 1 // the replica now holds these blocks
	KVRemoved KVEventType = 2 // it evicted these blocks
	KVCleared KVEventType = 3 // it holds nothing (cache reset, restart)
)

// PoolRole is an enum ilb_pool_role (since 0.6): what a pool does in a
// prefill/decode split (RouterPoolSpec.Role).
type PoolRole int32

const (
	RoleBoth    PoolRole = 0 // serves whole requests (default)
	RolePrefill PoolRole = 1 // the prefill half of a RoleDecode pool's requests
	RoleDecode  PoolRole = 2 // the decode half: each pick is a pair
)

// MatchKind is an enum ilb_match_kind (since 0.6): how a route's Match
// compares a request attribute.
type MatchKind int32

const (
	MatchExact   MatchKind = 1 // its value equals Value
	MatchPrefix  MatchKind = 2 // its value starts with Value
	MatchPresent MatchKind = 3 // the request has the attribute
	MatchAbsent  MatchKind = 4 // it does not
)
