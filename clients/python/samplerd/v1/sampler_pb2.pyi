from samplerd.v1 import profile_pb2 as _profile_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
DTYPE_BF16: DType
DTYPE_F16: DType
DTYPE_F32: DType
DTYPE_UNSPECIFIED: DType

class Error(_message.Message):
    __slots__ = ["code", "field", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    field: str
    message: str
    def __init__(self, code: _Optional[int] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListProfilesRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListProfilesResponse(_message.Message):
    __slots__ = ["default_profile", "profiles"]
    DEFAULT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    default_profile: str
    profiles: _containers.RepeatedCompositeFieldContainer[_profile_pb2.Profile]
    def __init__(self, profiles: _Optional[_Iterable[_Union[_profile_pb2.Profile, _Mapping]]] = ..., default_profile: _Optional[str] = ...) -> None: ...

class Metrics(_message.Message):
    __slots__ = ["agreement", "attn_entropy", "attn_varentropy", "interaction_strength", "logits_entropy", "logits_varentropy"]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ATTN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    ATTN_VARENTROPY_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    LOGITS_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    LOGITS_VARENTROPY_FIELD_NUMBER: _ClassVar[int]
    agreement: float
    attn_entropy: float
    attn_varentropy: float
    interaction_strength: float
    logits_entropy: float
    logits_varentropy: float
    def __init__(self, logits_entropy: _Optional[float] = ..., logits_varentropy: _Optional[float] = ..., attn_entropy: _Optional[float] = ..., attn_varentropy: _Optional[float] = ..., agreement: _Optional[float] = ..., interaction_strength: _Optional[float] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ["steps"]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    def __init__(self, steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ["results"]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StepResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StepResult, _Mapping]]] = ...) -> None: ...

class ShmControlRequest(_message.Message):
    __slots__ = ["authorization", "register", "sample", "unregister"]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    UNREGISTER_FIELD_NUMBER: _ClassVar[int]
    authorization: str
    register: ShmRegister
    sample: SampleRequest
    unregister: ShmUnregister
    def __init__(self, register: _Optional[_Union[ShmRegister, _Mapping]] = ..., unregister: _Optional[_Union[ShmUnregister, _Mapping]] = ..., sample: _Optional[_Union[SampleRequest, _Mapping]] = ..., authorization: _Optional[str] = ...) -> None: ...

class ShmControlResponse(_message.Message):
    __slots__ = ["code", "message", "region", "sample", "session", "size"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    region: str
    sample: SampleResponse
    session: str
    size: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., session: _Optional[str] = ..., region: _Optional[str] = ..., size: _Optional[int] = ..., sample: _Optional[_Union[SampleResponse, _Mapping]] = ...) -> None: ...

class ShmRegister(_message.Message):
    __slots__ = ["name"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ShmUnregister(_message.Message):
    __slots__ = ["region"]
    REGION_FIELD_NUMBER: _ClassVar[int]
    region: str
    def __init__(self, region: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ["attention", "attention_ref", "logits", "logits_ref", "params", "profile", "recent_tokens", "seed", "sequence_id", "step", "top_logprobs"]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_REF_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    LOGITS_REF_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    RECENT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    attention: Tensor
    attention_ref: TensorRef
    logits: Tensor
    logits_ref: TensorRef
    params: _profile_pb2.SamplingParams
    profile: str
    recent_tokens: _containers.RepeatedScalarFieldContainer[int]
    seed: int
    sequence_id: str
    step: int
    top_logprobs: int
    def __init__(self, sequence_id: _Optional[str] = ..., step: _Optional[int] = ..., logits: _Optional[_Union[Tensor, _Mapping]] = ..., attention: _Optional[_Union[Tensor, _Mapping]] = ..., recent_tokens: _Optional[_Iterable[int]] = ..., params: _Optional[_Union[_profile_pb2.SamplingParams, _Mapping]] = ..., profile: _Optional[str] = ..., seed: _Optional[int] = ..., top_logprobs: _Optional[int] = ..., logits_ref: _Optional[_Union[TensorRef, _Mapping]] = ..., attention_ref: _Optional[_Union[TensorRef, _Mapping]] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ["applied", "error", "logprob", "metrics", "profile", "regime", "seed", "sequence_id", "server_micros", "step", "token", "top"]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_MICROS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    applied: _profile_pb2.SamplingParams
    error: Error
    logprob: float
    metrics: Metrics
    profile: str
    regime: _profile_pb2.Regime
    seed: int
    sequence_id: str
    server_micros: int
    step: int
    token: int
    top: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    def __init__(self, sequence_id: _Optional[str] = ..., step: _Optional[int] = ..., token: _Optional[int] = ..., logprob: _Optional[float] = ..., regime: _Optional[_Union[_profile_pb2.Regime, str]] = ..., applied: _Optional[_Union[_profile_pb2.SamplingParams, _Mapping]] = ..., metrics: _Optional[_Union[Metrics, _Mapping]] = ..., top: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., server_micros: _Optional[int] = ..., seed: _Optional[int] = ..., profile: _Optional[str] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ["data", "dtype", "shape"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorRef(_message.Message):
    __slots__ = ["dtype", "offset", "region", "shape"]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    offset: int
    region: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, region: _Optional[str] = ..., offset: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class TokenLogprob(_message.Message):
    __slots__ = ["logprob", "token"]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    logprob: float
    token: int
    def __init__(self, token: _Optional[int] = ..., logprob: _Optional[float] = ...) -> None: ...

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
