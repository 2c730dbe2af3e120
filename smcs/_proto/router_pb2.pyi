from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Retrieval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_UNSPECIFIED: _ClassVar[Retrieval]
    RETRIEVAL_AUTO: _ClassVar[Retrieval]
    RETRIEVAL_EXACT: _ClassVar[Retrieval]
    RETRIEVAL_IVF: _ClassVar[Retrieval]

class Scorer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORER_UNSPECIFIED: _ClassVar[Scorer]
    SCORER_AUTO: _ClassVar[Scorer]
    SCORER_VOTE: _ClassVar[Scorer]
    SCORER_SOURCE: _ClassVar[Scorer]
    SCORER_KNN: _ClassVar[Scorer]
    SCORER_HEAD: _ClassVar[Scorer]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_MATH: _ClassVar[Task]
    TASK_NUMERIC: _ClassVar[Task]
    TASK_MULTIPLE_CHOICE: _ClassVar[Task]
    TASK_CODE: _ClassVar[Task]
    TASK_EXACT: _ClassVar[Task]
    TASK_INSTRUCTION: _ClassVar[Task]

class AnswerSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER_SOURCE_UNSPECIFIED: _ClassVar[AnswerSource]
    ANSWER_SOURCE_AGGREGATION: _ClassVar[AnswerSource]
    ANSWER_SOURCE_FALLBACK_AGGREGATOR: _ClassVar[AnswerSource]
    ANSWER_SOURCE_BEST_REFERENCE: _ClassVar[AnswerSource]
    ANSWER_SOURCE_CONSENSUS: _ClassVar[AnswerSource]

class ScoreKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_KIND_UNSPECIFIED: _ClassVar[ScoreKind]
    SCORE_KIND_PRIOR: _ClassVar[ScoreKind]
    SCORE_KIND_ACCURACY: _ClassVar[ScoreKind]
    SCORE_KIND_SKILL: _ClassVar[ScoreKind]

class CallRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_ROLE_UNSPECIFIED: _ClassVar[CallRole]
    CALL_ROLE_PROPOSER: _ClassVar[CallRole]
    CALL_ROLE_AGGREGATOR: _ClassVar[CallRole]
    CALL_ROLE_SAMPLE: _ClassVar[CallRole]
    CALL_ROLE_VOTER: _ClassVar[CallRole]
    CALL_ROLE_EXPERT: _ClassVar[CallRole]
    CALL_ROLE_ANSWERER: _ClassVar[CallRole]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_SETUP: _ClassVar[ErrorKind]
    ERROR_KIND_CONNECTION: _ClassVar[ErrorKind]
    ERROR_KIND_TIMEOUT: _ClassVar[ErrorKind]
    ERROR_KIND_RATE_LIMITED: _ClassVar[ErrorKind]
    ERROR_KIND_CONTEXT_OVERFLOW: _ClassVar[ErrorKind]
    ERROR_KIND_AUTH: _ClassVar[ErrorKind]
    ERROR_KIND_BAD_REQUEST: _ClassVar[ErrorKind]
    ERROR_KIND_SERVER_ERROR: _ClassVar[ErrorKind]
    ERROR_KIND_MALFORMED_RESPONSE: _ClassVar[ErrorKind]
    ERROR_KIND_EMPTY_RESPONSE: _ClassVar[ErrorKind]
    ERROR_KIND_EMPTY_SUBSET: _ClassVar[ErrorKind]
RETRIEVAL_UNSPECIFIED: Retrieval
RETRIEVAL_AUTO: Retrieval
RETRIEVAL_EXACT: Retrieval
RETRIEVAL_IVF: Retrieval
SCORER_UNSPECIFIED: Scorer
SCORER_AUTO: Scorer
SCORER_VOTE: Scorer
SCORER_SOURCE: Scorer
SCORER_KNN: Scorer
SCORER_HEAD: Scorer
TASK_UNSPECIFIED: Task
TASK_MATH: Task
TASK_NUMERIC: Task
TASK_MULTIPLE_CHOICE: Task
TASK_CODE: Task
TASK_EXACT: Task
TASK_INSTRUCTION: Task
ANSWER_SOURCE_UNSPECIFIED: AnswerSource
ANSWER_SOURCE_AGGREGATION: AnswerSource
ANSWER_SOURCE_FALLBACK_AGGREGATOR: AnswerSource
ANSWER_SOURCE_BEST_REFERENCE: AnswerSource
ANSWER_SOURCE_CONSENSUS: AnswerSource
SCORE_KIND_UNSPECIFIED: ScoreKind
SCORE_KIND_PRIOR: ScoreKind
SCORE_KIND_ACCURACY: ScoreKind
SCORE_KIND_SKILL: ScoreKind
CALL_ROLE_UNSPECIFIED: CallRole
CALL_ROLE_PROPOSER: CallRole
CALL_ROLE_AGGREGATOR: CallRole
CALL_ROLE_SAMPLE: CallRole
CALL_ROLE_VOTER: CallRole
CALL_ROLE_EXPERT: CallRole
CALL_ROLE_ANSWERER: CallRole
ERROR_KIND_UNSPECIFIED: ErrorKind
ERROR_KIND_SETUP: ErrorKind
ERROR_KIND_CONNECTION: ErrorKind
ERROR_KIND_TIMEOUT: ErrorKind
ERROR_KIND_RATE_LIMITED: ErrorKind
ERROR_KIND_CONTEXT_OVERFLOW: ErrorKind
ERROR_KIND_AUTH: ErrorKind
ERROR_KIND_BAD_REQUEST: ErrorKind
ERROR_KIND_SERVER_ERROR: ErrorKind
ERROR_KIND_MALFORMED_RESPONSE: ErrorKind
ERROR_KIND_EMPTY_RESPONSE: ErrorKind
ERROR_KIND_EMPTY_SUBSET: ErrorKind

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class PolicyOverrides(_message.Message):
    __slots__ = ("k", "n_base", "gamma", "k_drop", "n", "lam", "aggregator", "allowed_models", "min_references", "retrieval", "nprobe", "scorer", "cover", "distinct_subsets", "consensus", "willingness_to_pay", "coverage_target", "max_cost")
    K_FIELD_NUMBER: _ClassVar[int]
    N_BASE_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    K_DROP_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MIN_REFERENCES_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    COVER_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_SUBSETS_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    WILLINGNESS_TO_PAY_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_TARGET_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    k: int
    n_base: int
    gamma: float
    k_drop: int
    n: int
    lam: float
    aggregator: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    min_references: int
    retrieval: Retrieval
    nprobe: int
    scorer: Scorer
    cover: bool
    distinct_subsets: bool
    consensus: float
    willingness_to_pay: float
    coverage_target: float
    max_cost: float
    def __init__(self, k: _Optional[int] = ..., n_base: _Optional[int] = ..., gamma: _Optional[float] = ..., k_drop: _Optional[int] = ..., n: _Optional[int] = ..., lam: _Optional[float] = ..., aggregator: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., min_references: _Optional[int] = ..., retrieval: _Optional[_Union[Retrieval, str]] = ..., nprobe: _Optional[int] = ..., scorer: _Optional[_Union[Scorer, str]] = ..., cover: _Optional[bool] = ..., distinct_subsets: _Optional[bool] = ..., consensus: _Optional[float] = ..., willingness_to_pay: _Optional[float] = ..., coverage_target: _Optional[float] = ..., max_cost: _Optional[float] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("k", "n_base", "gamma", "k_drop", "n", "lam", "aggregator", "threads", "quantized", "min_references", "retrieval", "nprobe", "scorer", "cover", "distinct_subsets", "consensus", "willingness_to_pay", "coverage_target", "max_cost")
    K_FIELD_NUMBER: _ClassVar[int]
    N_BASE_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    K_DROP_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    MIN_REFERENCES_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    COVER_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_SUBSETS_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    WILLINGNESS_TO_PAY_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_TARGET_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    k: int
    n_base: int
    gamma: float
    k_drop: int
    n: int
    lam: float
    aggregator: str
    threads: int
    quantized: bool
    min_references: int
    retrieval: Retrieval
    nprobe: int
    scorer: Scorer
    cover: bool
    distinct_subsets: bool
    consensus: float
    willingness_to_pay: float
    coverage_target: float
    max_cost: float
    def __init__(self, k: _Optional[int] = ..., n_base: _Optional[int] = ..., gamma: _Optional[float] = ..., k_drop: _Optional[int] = ..., n: _Optional[int] = ..., lam: _Optional[float] = ..., aggregator: _Optional[str] = ..., threads: _Optional[int] = ..., quantized: _Optional[bool] = ..., min_references: _Optional[int] = ..., retrieval: _Optional[_Union[Retrieval, str]] = ..., nprobe: _Optional[int] = ..., scorer: _Optional[_Union[Scorer, str]] = ..., cover: _Optional[bool] = ..., distinct_subsets: _Optional[bool] = ..., consensus: _Optional[float] = ..., willingness_to_pay: _Optional[float] = ..., coverage_target: _Optional[float] = ..., max_cost: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("question", "embedding", "policy", "seed", "debug", "include_support")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DEBUG_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    question: str
    embedding: Embedding
    policy: PolicyOverrides
    seed: int
    debug: bool
    include_support: bool
    def __init__(self, question: _Optional[str] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ..., policy: _Optional[_Union[PolicyOverrides, _Mapping]] = ..., seed: _Optional[int] = ..., debug: _Optional[bool] = ..., include_support: _Optional[bool] = ...) -> None: ...

class Referencer(_message.Message):
    __slots__ = ("model", "vote", "probability", "expected_cost")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COST_FIELD_NUMBER: _ClassVar[int]
    model: str
    vote: float
    probability: float
    expected_cost: float
    def __init__(self, model: _Optional[str] = ..., vote: _Optional[float] = ..., probability: _Optional[float] = ..., expected_cost: _Optional[float] = ...) -> None: ...

class ModelProbability(_message.Message):
    __slots__ = ("model", "probability")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    model: str
    probability: float
    def __init__(self, model: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Subset(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class SupportSet(_message.Message):
    __slots__ = ("rows", "ids", "similarities", "texts", "outcomes")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SIMILARITIES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedScalarFieldContainer[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    similarities: _containers.RepeatedScalarFieldContainer[float]
    texts: _containers.RepeatedScalarFieldContainer[str]
    outcomes: _containers.RepeatedCompositeFieldContainer[ModelOutcomes]
    def __init__(self, rows: _Optional[_Iterable[int]] = ..., ids: _Optional[_Iterable[str]] = ..., similarities: _Optional[_Iterable[float]] = ..., texts: _Optional[_Iterable[str]] = ..., outcomes: _Optional[_Iterable[_Union[ModelOutcomes, _Mapping]]] = ...) -> None: ...

class ModelOutcomes(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("referencers", "aggregator", "subsets", "seed", "bank_version", "support", "scorer", "out_of_bank", "model_probabilities", "k_clamped_from", "drop_probabilities", "duplicate_subsets", "expected_cost", "aggregation_cost", "plan_notes", "model_costs")
    REFERENCERS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    SUBSETS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BANK_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_BANK_FIELD_NUMBER: _ClassVar[int]
    MODEL_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    K_CLAMPED_FROM_FIELD_NUMBER: _ClassVar[int]
    DROP_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_SUBSETS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COST_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_COST_FIELD_NUMBER: _ClassVar[int]
    PLAN_NOTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_COSTS_FIELD_NUMBER: _ClassVar[int]
    referencers: _containers.RepeatedCompositeFieldContainer[Referencer]
    aggregator: str
    subsets: _containers.RepeatedCompositeFieldContainer[Subset]
    seed: int
    bank_version: str
    support: SupportSet
    scorer: Scorer
    out_of_bank: bool
    model_probabilities: _containers.RepeatedCompositeFieldContainer[ModelProbability]
    k_clamped_from: int
    drop_probabilities: _containers.RepeatedScalarFieldContainer[float]
    duplicate_subsets: int
    expected_cost: float
    aggregation_cost: float
    plan_notes: _containers.RepeatedScalarFieldContainer[str]
    model_costs: _containers.RepeatedCompositeFieldContainer[ModelCost]
    def __init__(self, referencers: _Optional[_Iterable[_Union[Referencer, _Mapping]]] = ..., aggregator: _Optional[str] = ..., subsets: _Optional[_Iterable[_Union[Subset, _Mapping]]] = ..., seed: _Optional[int] = ..., bank_version: _Optional[str] = ..., support: _Optional[_Union[SupportSet, _Mapping]] = ..., scorer: _Optional[_Union[Scorer, str]] = ..., out_of_bank: _Optional[bool] = ..., model_probabilities: _Optional[_Iterable[_Union[ModelProbability, _Mapping]]] = ..., k_clamped_from: _Optional[int] = ..., drop_probabilities: _Optional[_Iterable[float]] = ..., duplicate_subsets: _Optional[int] = ..., expected_cost: _Optional[float] = ..., aggregation_cost: _Optional[float] = ..., plan_notes: _Optional[_Iterable[str]] = ..., model_costs: _Optional[_Iterable[_Union[ModelCost, _Mapping]]] = ...) -> None: ...

class ModelCost(_message.Message):
    __slots__ = ("model", "expected_cost")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COST_FIELD_NUMBER: _ClassVar[int]
    model: str
    expected_cost: float
    def __init__(self, model: _Optional[str] = ..., expected_cost: _Optional[float] = ...) -> None: ...

class AnswerRequest(_message.Message):
    __slots__ = ("question", "embedding", "policy", "seed", "strategy", "task", "strategy_options")
    class StrategyOptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    question: str
    embedding: Embedding
    policy: PolicyOverrides
    seed: int
    strategy: str
    task: Task
    strategy_options: _containers.ScalarMap[str, str]
    def __init__(self, question: _Optional[str] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ..., policy: _Optional[_Union[PolicyOverrides, _Mapping]] = ..., seed: _Optional[int] = ..., strategy: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., strategy_options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("routed", "reference", "aggregation", "final", "plan", "call", "strategy_result")
    ROUTED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_RESULT_FIELD_NUMBER: _ClassVar[int]
    routed: RouteResponse
    reference: ReferenceEvent
    aggregation: AggregationEvent
    final: FinalEvent
    plan: StrategyPlanEvent
    call: StrategyCallEvent
    strategy_result: StrategyResultEvent
    def __init__(self, routed: _Optional[_Union[RouteResponse, _Mapping]] = ..., reference: _Optional[_Union[ReferenceEvent, _Mapping]] = ..., aggregation: _Optional[_Union[AggregationEvent, _Mapping]] = ..., final: _Optional[_Union[FinalEvent, _Mapping]] = ..., plan: _Optional[_Union[StrategyPlanEvent, _Mapping]] = ..., call: _Optional[_Union[StrategyCallEvent, _Mapping]] = ..., strategy_result: _Optional[_Union[StrategyResultEvent, _Mapping]] = ...) -> None: ...

class StrategyPlanEvent(_message.Message):
    __slots__ = ("strategy", "models", "aggregator", "scores", "score_kind", "decision", "skills")
    class SkillsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SKILLS_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    models: _containers.RepeatedScalarFieldContainer[str]
    aggregator: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    score_kind: ScoreKind
    decision: RouteResponse
    skills: _containers.ScalarMap[str, float]
    def __init__(self, strategy: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., aggregator: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ..., score_kind: _Optional[_Union[ScoreKind, str]] = ..., decision: _Optional[_Union[RouteResponse, _Mapping]] = ..., skills: _Optional[_Mapping[str, float]] = ...) -> None: ...

class StrategyCallEvent(_message.Message):
    __slots__ = ("model", "role", "layer", "index", "position", "seed", "inputs", "extracted", "text", "error", "error_kind", "latency_s", "prompt_tokens", "completion_tokens", "temperature")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    role: CallRole
    layer: int
    index: int
    position: int
    seed: int
    inputs: _containers.RepeatedScalarFieldContainer[int]
    extracted: str
    text: str
    error: str
    error_kind: ErrorKind
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    temperature: float
    def __init__(self, model: _Optional[str] = ..., role: _Optional[_Union[CallRole, str]] = ..., layer: _Optional[int] = ..., index: _Optional[int] = ..., position: _Optional[int] = ..., seed: _Optional[int] = ..., inputs: _Optional[_Iterable[int]] = ..., extracted: _Optional[str] = ..., text: _Optional[str] = ..., error: _Optional[str] = ..., error_kind: _Optional[_Union[ErrorKind, str]] = ..., latency_s: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class StrategyResultEvent(_message.Message):
    __slots__ = ("text", "strategy", "chosen", "votes", "notes", "params_json", "seed", "bank_version")
    class VotesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BANK_VERSION_FIELD_NUMBER: _ClassVar[int]
    text: str
    strategy: str
    chosen: int
    votes: _containers.ScalarMap[str, int]
    notes: _containers.RepeatedScalarFieldContainer[str]
    params_json: str
    seed: int
    bank_version: str
    def __init__(self, text: _Optional[str] = ..., strategy: _Optional[str] = ..., chosen: _Optional[int] = ..., votes: _Optional[_Mapping[str, int]] = ..., notes: _Optional[_Iterable[str]] = ..., params_json: _Optional[str] = ..., seed: _Optional[int] = ..., bank_version: _Optional[str] = ...) -> None: ...

class ReferenceEvent(_message.Message):
    __slots__ = ("model", "text", "error", "latency_s", "prior", "error_kind", "prompt_tokens", "completion_tokens", "temperature")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    PRIOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    text: str
    error: str
    latency_s: float
    prior: float
    error_kind: ErrorKind
    prompt_tokens: int
    completion_tokens: int
    temperature: float
    def __init__(self, model: _Optional[str] = ..., text: _Optional[str] = ..., error: _Optional[str] = ..., latency_s: _Optional[float] = ..., prior: _Optional[float] = ..., error_kind: _Optional[_Union[ErrorKind, str]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class AggregationEvent(_message.Message):
    __slots__ = ("index", "text", "similarity_score", "perplexity", "total_score", "error", "aggregator", "subset", "error_kind", "latency_s", "prompt_tokens", "completion_tokens", "temperature")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    SUBSET_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    similarity_score: float
    perplexity: float
    total_score: float
    error: str
    aggregator: str
    subset: _containers.RepeatedScalarFieldContainer[str]
    error_kind: ErrorKind
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    temperature: float
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., similarity_score: _Optional[float] = ..., perplexity: _Optional[float] = ..., total_score: _Optional[float] = ..., error: _Optional[str] = ..., aggregator: _Optional[str] = ..., subset: _Optional[_Iterable[str]] = ..., error_kind: _Optional[_Union[ErrorKind, str]] = ..., latency_s: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class FinalEvent(_message.Message):
    __slots__ = ("text", "selected", "source", "notes", "seed", "bank_version", "reference", "agreement")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BANK_VERSION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    text: str
    selected: int
    source: AnswerSource
    notes: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    bank_version: str
    reference: int
    agreement: float
    def __init__(self, text: _Optional[str] = ..., selected: _Optional[int] = ..., source: _Optional[_Union[AnswerSource, str]] = ..., notes: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., bank_version: _Optional[str] = ..., reference: _Optional[int] = ..., agreement: _Optional[float] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("texts", "embeddings", "logprobs", "lam")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    logprobs: _containers.RepeatedCompositeFieldContainer[TokenLogprobs]
    lam: float
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., logprobs: _Optional[_Iterable[_Union[TokenLogprobs, _Mapping]]] = ..., lam: _Optional[float] = ...) -> None: ...

class TokenLogprobs(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("similarity", "perplexity", "total", "best")
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    similarity: _containers.RepeatedScalarFieldContainer[float]
    perplexity: _containers.RepeatedScalarFieldContainer[float]
    total: _containers.RepeatedScalarFieldContainer[float]
    best: int
    def __init__(self, similarity: _Optional[_Iterable[float]] = ..., perplexity: _Optional[_Iterable[float]] = ..., total: _Optional[_Iterable[float]] = ..., best: _Optional[int] = ...) -> None: ...

class BankInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BankInfoResponse(_message.Message):
    __slots__ = ("bank",)
    BANK_FIELD_NUMBER: _ClassVar[int]
    bank: BankSummary
    def __init__(self, bank: _Optional[_Union[BankSummary, _Mapping]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "accuracy", "evaluated")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    accuracy: float
    evaluated: int
    def __init__(self, name: _Optional[str] = ..., accuracy: _Optional[float] = ..., evaluated: _Optional[int] = ...) -> None: ...

class BankSummary(_message.Message):
    __slots__ = ("version", "n_questions", "n_models", "dim", "embedder", "created", "models", "query_text", "scorer", "scorer_stale", "mean_pairwise_cosine", "degenerate")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    N_MODELS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    SCORER_STALE_FIELD_NUMBER: _ClassVar[int]
    MEAN_PAIRWISE_COSINE_FIELD_NUMBER: _ClassVar[int]
    DEGENERATE_FIELD_NUMBER: _ClassVar[int]
    version: str
    n_questions: int
    n_models: int
    dim: int
    embedder: str
    created: str
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    query_text: str
    scorer: Scorer
    scorer_stale: bool
    mean_pairwise_cosine: float
    degenerate: bool
    def __init__(self, version: _Optional[str] = ..., n_questions: _Optional[int] = ..., n_models: _Optional[int] = ..., dim: _Optional[int] = ..., embedder: _Optional[str] = ..., created: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ..., query_text: _Optional[str] = ..., scorer: _Optional[_Union[Scorer, str]] = ..., scorer_stale: _Optional[bool] = ..., mean_pairwise_cosine: _Optional[float] = ..., degenerate: _Optional[bool] = ...) -> None: ...

class ServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfoResponse(_message.Message):
    __slots__ = ("version", "policy", "scorer", "aggregator", "bank_version", "strategy", "strategy_options", "accepts_text", "limits")
    class StrategyOptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    BANK_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_TEXT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    version: str
    policy: Policy
    scorer: Scorer
    aggregator: str
    bank_version: str
    strategy: str
    strategy_options: _containers.ScalarMap[str, str]
    accepts_text: bool
    limits: ServerLimits
    def __init__(self, version: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., scorer: _Optional[_Union[Scorer, str]] = ..., aggregator: _Optional[str] = ..., bank_version: _Optional[str] = ..., strategy: _Optional[str] = ..., strategy_options: _Optional[_Mapping[str, str]] = ..., accepts_text: _Optional[bool] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_concurrent_rpcs", "admission_wait_s", "max_message_bytes", "max_question_chars", "max_subsets", "max_candidates")
    MAX_CONCURRENT_RPCS_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUESTION_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBSETS_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    max_concurrent_rpcs: int
    admission_wait_s: float
    max_message_bytes: int
    max_question_chars: int
    max_subsets: int
    max_candidates: int
    def __init__(self, max_concurrent_rpcs: _Optional[int] = ..., admission_wait_s: _Optional[float] = ..., max_message_bytes: _Optional[int] = ..., max_question_chars: _Optional[int] = ..., max_subsets: _Optional[int] = ..., max_candidates: _Optional[int] = ...) -> None: ...

class NewQuestion(_message.Message):
    __slots__ = ("id", "text", "source", "label", "embedding", "outcomes")
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    source: str
    label: str
    embedding: Embedding
    outcomes: _containers.ScalarMap[str, int]
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., source: _Optional[str] = ..., label: _Optional[str] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ..., outcomes: _Optional[_Mapping[str, int]] = ...) -> None: ...

class AppendQuestionsRequest(_message.Message):
    __slots__ = ("questions",)
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    questions: _containers.RepeatedCompositeFieldContainer[NewQuestion]
    def __init__(self, questions: _Optional[_Iterable[_Union[NewQuestion, _Mapping]]] = ...) -> None: ...

class AppendQuestionsResponse(_message.Message):
    __slots__ = ("version", "n_questions", "n_models")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    N_MODELS_FIELD_NUMBER: _ClassVar[int]
    version: str
    n_questions: int
    n_models: int
    def __init__(self, version: _Optional[str] = ..., n_questions: _Optional[int] = ..., n_models: _Optional[int] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("model", "question_id", "value")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUESTION_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    model: str
    question_id: str
    value: int
    def __init__(self, model: _Optional[str] = ..., question_id: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class RecordOutcomesRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class RecordOutcomesResponse(_message.Message):
    __slots__ = ("version", "n_questions", "n_models")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    N_MODELS_FIELD_NUMBER: _ClassVar[int]
    version: str
    n_questions: int
    n_models: int
    def __init__(self, version: _Optional[str] = ..., n_questions: _Optional[int] = ..., n_models: _Optional[int] = ...) -> None: ...

class AddModelRequest(_message.Message):
    __slots__ = ("name", "backend", "cost_per_input_token", "cost_per_output_token", "outcomes")
    class BackendEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    COST_PER_INPUT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COST_PER_OUTPUT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend: _containers.ScalarMap[str, str]
    cost_per_input_token: float
    cost_per_output_token: float
    outcomes: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., backend: _Optional[_Mapping[str, str]] = ..., cost_per_input_token: _Optional[float] = ..., cost_per_output_token: _Optional[float] = ..., outcomes: _Optional[_Mapping[str, int]] = ...) -> None: ...

class AddModelResponse(_message.Message):
    __slots__ = ("version", "n_questions", "n_models")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    N_MODELS_FIELD_NUMBER: _ClassVar[int]
    version: str
    n_questions: int
    n_models: int
    def __init__(self, version: _Optional[str] = ..., n_questions: _Optional[int] = ..., n_models: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("bank",)
    BANK_FIELD_NUMBER: _ClassVar[int]
    bank: BankSummary
    def __init__(self, bank: _Optional[_Union[BankSummary, _Mapping]] = ...) -> None: ...
