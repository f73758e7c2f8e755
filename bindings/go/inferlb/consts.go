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
	VersionMinor = 3
)

// Limits.
const (
	ThreadTickets = 32      // ILB_THREAD_TICKETS
	IDMax         = 255     // ILB_ID_MAX: bytes in an id, zone, label
	WeightMax     = 1000000 // ILB_WEIGHT_MAX
	LabelsMax     = 64      // ILB_LABELS_MAX
	SignalCount   = 15      // ILB_SIGNAL_COUNT
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
