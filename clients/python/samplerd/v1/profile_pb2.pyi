from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
METRIC_AGREEMENT: Metric
METRIC_ATTN_ENTROPY: Metric
METRIC_ATTN_VARENTROPY: Metric
METRIC_INTERACTION_STRENGTH: Metric
METRIC_LOGITS_ENTROPY: Metric
METRIC_LOGITS_VARENTROPY: Metric
METRIC_UNSPECIFIED: Metric
OP_GT: Op
OP_LT: Op
OP_UNSPECIFIED: Op
REGIME_ADAPTIVE: Regime
REGIME_ARGMAX: Regime
REGIME_CLARIFY: Regime
REGIME_EXPLORE: Regime
REGIME_FIXED: Regime
REGIME_RESAMPLE: Regime
REGIME_UNSPECIFIED: Regime

class Bound(_message.Message):
    __slots__ = ["metric", "op", "value"]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    metric: Metric
    op: Op
    value: float
    def __init__(self, metric: _Optional[_Union[Metric, str]] = ..., op: _Optional[_Union[Op, str]] = ..., value: _Optional[float] = ...) -> None: ...

class Coefficients(_message.Message):
    __slots__ = ["adaptive_min_p_logits_entropy", "adaptive_min_p_logits_varentropy", "adaptive_min_p_max", "adaptive_min_p_min", "adaptive_temperature_agreement", "adaptive_temperature_attn_entropy", "adaptive_temperature_attn_varentropy", "adaptive_temperature_logits_entropy", "adaptive_temperature_logits_varentropy", "adaptive_top_k_agreement", "adaptive_top_k_interaction_strength", "adaptive_top_k_max", "adaptive_top_k_min", "adaptive_top_p_attn_varentropy", "adaptive_top_p_max", "adaptive_top_p_min", "clarify_temperature_attn_entropy", "clarify_temperature_max", "clarify_temperature_offset", "explore_temperature_interaction_strength", "explore_temperature_max", "explore_temperature_offset", "explore_top_k_agreement", "explore_top_k_min", "resample_temperature_attn_varentropy", "resample_temperature_min", "resample_temperature_offset", "resample_top_p_attn_entropy", "resample_top_p_min"]
    ADAPTIVE_MIN_P_LOGITS_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_MIN_P_LOGITS_VARENTROPY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_MIN_P_MAX_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_MIN_P_MIN_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TEMPERATURE_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TEMPERATURE_ATTN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TEMPERATURE_ATTN_VARENTROPY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TEMPERATURE_LOGITS_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TEMPERATURE_LOGITS_VARENTROPY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TOP_K_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TOP_K_INTERACTION_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TOP_K_MAX_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TOP_K_MIN_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TOP_P_ATTN_VARENTROPY_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TOP_P_MAX_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_TOP_P_MIN_FIELD_NUMBER: _ClassVar[int]
    CLARIFY_TEMPERATURE_ATTN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    CLARIFY_TEMPERATURE_MAX_FIELD_NUMBER: _ClassVar[int]
    CLARIFY_TEMPERATURE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_TEMPERATURE_INTERACTION_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_TEMPERATURE_MAX_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_TEMPERATURE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_TOP_K_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_TOP_K_MIN_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_TEMPERATURE_ATTN_VARENTROPY_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_TEMPERATURE_MIN_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_TEMPERATURE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_TOP_P_ATTN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_TOP_P_MIN_FIELD_NUMBER: _ClassVar[int]
    adaptive_min_p_logits_entropy: float
    adaptive_min_p_logits_varentropy: float
    adaptive_min_p_max: float
    adaptive_min_p_min: float
    adaptive_temperature_agreement: float
    adaptive_temperature_attn_entropy: float
    adaptive_temperature_attn_varentropy: float
    adaptive_temperature_logits_entropy: float
    adaptive_temperature_logits_varentropy: float
    adaptive_top_k_agreement: float
    adaptive_top_k_interaction_strength: float
    adaptive_top_k_max: float
    adaptive_top_k_min: float
    adaptive_top_p_attn_varentropy: float
    adaptive_top_p_max: float
    adaptive_top_p_min: float
    clarify_temperature_attn_entropy: float
    clarify_temperature_max: float
    clarify_temperature_offset: float
    explore_temperature_interaction_strength: float
    explore_temperature_max: float
    explore_temperature_offset: float
    explore_top_k_agreement: float
    explore_top_k_min: float
    resample_temperature_attn_varentropy: float
    resample_temperature_min: float
    resample_temperature_offset: float
    resample_top_p_attn_entropy: float
    resample_top_p_min: float
    def __init__(self, clarify_temperature_offset: _Optional[float] = ..., clarify_temperature_attn_entropy: _Optional[float] = ..., clarify_temperature_max: _Optional[float] = ..., explore_temperature_offset: _Optional[float] = ..., explore_temperature_interaction_strength: _Optional[float] = ..., explore_temperature_max: _Optional[float] = ..., explore_top_k_agreement: _Optional[float] = ..., explore_top_k_min: _Optional[float] = ..., resample_temperature_offset: _Optional[float] = ..., resample_temperature_attn_varentropy: _Optional[float] = ..., resample_temperature_min: _Optional[float] = ..., resample_top_p_attn_entropy: _Optional[float] = ..., resample_top_p_min: _Optional[float] = ..., adaptive_temperature_logits_entropy: _Optional[float] = ..., adaptive_temperature_logits_varentropy: _Optional[float] = ..., adaptive_temperature_attn_entropy: _Optional[float] = ..., adaptive_temperature_attn_varentropy: _Optional[float] = ..., adaptive_temperature_agreement: _Optional[float] = ..., adaptive_top_p_attn_varentropy: _Optional[float] = ..., adaptive_top_p_min: _Optional[float] = ..., adaptive_top_p_max: _Optional[float] = ..., adaptive_top_k_interaction_strength: _Optional[float] = ..., adaptive_top_k_agreement: _Optional[float] = ..., adaptive_top_k_min: _Optional[float] = ..., adaptive_top_k_max: _Optional[float] = ..., adaptive_min_p_logits_entropy: _Optional[float] = ..., adaptive_min_p_logits_varentropy: _Optional[float] = ..., adaptive_min_p_min: _Optional[float] = ..., adaptive_min_p_max: _Optional[float] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ["coefficients", "default_regime", "description", "name", "params", "regimes"]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REGIME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REGIMES_FIELD_NUMBER: _ClassVar[int]
    coefficients: Coefficients
    default_regime: Regime
    description: str
    name: str
    params: SamplingParams
    regimes: _containers.RepeatedCompositeFieldContainer[RegimeRule]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., params: _Optional[_Union[SamplingParams, _Mapping]] = ..., regimes: _Optional[_Iterable[_Union[RegimeRule, _Mapping]]] = ..., default_regime: _Optional[_Union[Regime, str]] = ..., coefficients: _Optional[_Union[Coefficients, _Mapping]] = ...) -> None: ...

class ProfileSet(_message.Message):
    __slots__ = ["default_profile", "profiles"]
    DEFAULT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    default_profile: str
    profiles: _containers.RepeatedCompositeFieldContainer[Profile]
    def __init__(self, profiles: _Optional[_Iterable[_Union[Profile, _Mapping]]] = ..., default_profile: _Optional[str] = ...) -> None: ...

class RegimeRule(_message.Message):
    __slots__ = ["bounds", "regime"]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    bounds: _containers.RepeatedCompositeFieldContainer[Bound]
    regime: Regime
    def __init__(self, regime: _Optional[_Union[Regime, str]] = ..., bounds: _Optional[_Iterable[_Union[Bound, _Mapping]]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ["clarifying_token", "frequency_penalty", "logit_bias", "min_p", "n_adaptive_samples", "presence_penalty", "repetition_penalty", "temperature", "top_k", "top_p"]
    class LogitBiasEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    CLARIFYING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIAS_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    N_ADAPTIVE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    clarifying_token: int
    frequency_penalty: float
    logit_bias: _containers.ScalarMap[int, float]
    min_p: float
    n_adaptive_samples: int
    presence_penalty: float
    repetition_penalty: float
    temperature: float
    top_k: int
    top_p: float
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., min_p: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ..., presence_penalty: _Optional[float] = ..., logit_bias: _Optional[_Mapping[int, float]] = ..., n_adaptive_samples: _Optional[int] = ..., clarifying_token: _Optional[int] = ...) -> None: ...

class Regime(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
