import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_OPTICAL: _ClassVar[Modality]
    MODALITY_MULTISPECTRAL: _ClassVar[Modality]
    MODALITY_SAR: _ClassVar[Modality]
    MODALITY_INFRARED: _ClassVar[Modality]

class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEVEL_UNSPECIFIED: _ClassVar[Level]
    LEVEL_L1_SCENE: _ClassVar[Level]
    LEVEL_L2_GROUNDING: _ClassVar[Level]
    LEVEL_L3_ATTRIBUTE: _ClassVar[Level]
    LEVEL_L4_RELATION: _ClassVar[Level]

class QueryCoverage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUERY_COVERAGE_UNSPECIFIED: _ClassVar[QueryCoverage]
    QUERY_COVERAGE_NEWEST: _ClassVar[QueryCoverage]
    QUERY_COVERAGE_ALL: _ClassVar[QueryCoverage]

class DeadLetterCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEAD_LETTER_CAUSE_UNSPECIFIED: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_DECODE: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_SCHEMA_VERSION: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_WRONG_TYPE: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_OVERSIZE: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_PERMANENT: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_RETRIES_EXHAUSTED: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_UNHANDLED: _ClassVar[DeadLetterCause]
    DEAD_LETTER_CAUSE_EMPTY: _ClassVar[DeadLetterCause]
MODALITY_UNSPECIFIED: Modality
MODALITY_OPTICAL: Modality
MODALITY_MULTISPECTRAL: Modality
MODALITY_SAR: Modality
MODALITY_INFRARED: Modality
LEVEL_UNSPECIFIED: Level
LEVEL_L1_SCENE: Level
LEVEL_L2_GROUNDING: Level
LEVEL_L3_ATTRIBUTE: Level
LEVEL_L4_RELATION: Level
QUERY_COVERAGE_UNSPECIFIED: QueryCoverage
QUERY_COVERAGE_NEWEST: QueryCoverage
QUERY_COVERAGE_ALL: QueryCoverage
DEAD_LETTER_CAUSE_UNSPECIFIED: DeadLetterCause
DEAD_LETTER_CAUSE_DECODE: DeadLetterCause
DEAD_LETTER_CAUSE_SCHEMA_VERSION: DeadLetterCause
DEAD_LETTER_CAUSE_WRONG_TYPE: DeadLetterCause
DEAD_LETTER_CAUSE_OVERSIZE: DeadLetterCause
DEAD_LETTER_CAUSE_PERMANENT: DeadLetterCause
DEAD_LETTER_CAUSE_RETRIES_EXHAUSTED: DeadLetterCause
DEAD_LETTER_CAUSE_UNHANDLED: DeadLetterCause
DEAD_LETTER_CAUSE_EMPTY: DeadLetterCause

class EventHeader(_message.Message):
    __slots__ = ("schema_version", "event_id", "produced_at", "trace_id", "event_type", "producer")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_AT_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    produced_at: _timestamp_pb2.Timestamp
    trace_id: str
    event_type: str
    producer: str
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., produced_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ..., event_type: _Optional[str] = ..., producer: _Optional[str] = ...) -> None: ...

class ObjectRef(_message.Message):
    __slots__ = ("bucket", "key", "size_bytes", "etag", "content_type")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    key: str
    size_bytes: int
    etag: str
    content_type: str
    def __init__(self, bucket: _Optional[str] = ..., key: _Optional[str] = ..., size_bytes: _Optional[int] = ..., etag: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class AffineTransform(_message.Message):
    __slots__ = ("a", "b", "c", "d", "e", "f")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    D_FIELD_NUMBER: _ClassVar[int]
    E_FIELD_NUMBER: _ClassVar[int]
    F_FIELD_NUMBER: _ClassVar[int]
    a: float
    b: float
    c: float
    d: float
    e: float
    f: float
    def __init__(self, a: _Optional[float] = ..., b: _Optional[float] = ..., c: _Optional[float] = ..., d: _Optional[float] = ..., e: _Optional[float] = ..., f: _Optional[float] = ...) -> None: ...

class Footprint(_message.Message):
    __slots__ = ("geojson", "wkb")
    GEOJSON_FIELD_NUMBER: _ClassVar[int]
    WKB_FIELD_NUMBER: _ClassVar[int]
    geojson: str
    wkb: bytes
    def __init__(self, geojson: _Optional[str] = ..., wkb: _Optional[bytes] = ...) -> None: ...

class TileWindow(_message.Message):
    __slots__ = ("col_off", "row_off", "width", "height", "chip_width", "chip_height", "chip_transform", "crs", "tile_index")
    COL_OFF_FIELD_NUMBER: _ClassVar[int]
    ROW_OFF_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHIP_WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHIP_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHIP_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    CRS_FIELD_NUMBER: _ClassVar[int]
    TILE_INDEX_FIELD_NUMBER: _ClassVar[int]
    col_off: int
    row_off: int
    width: int
    height: int
    chip_width: int
    chip_height: int
    chip_transform: AffineTransform
    crs: str
    tile_index: int
    def __init__(self, col_off: _Optional[int] = ..., row_off: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., chip_width: _Optional[int] = ..., chip_height: _Optional[int] = ..., chip_transform: _Optional[_Union[AffineTransform, _Mapping]] = ..., crs: _Optional[str] = ..., tile_index: _Optional[int] = ...) -> None: ...

class PixelPoint(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class PixelBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class PixelPolygon(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[PixelPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[PixelPoint, _Mapping]]] = ...) -> None: ...

class PixelScribble(_message.Message):
    __slots__ = ("points", "stroke_width")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    STROKE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[PixelPoint]
    stroke_width: float
    def __init__(self, points: _Optional[_Iterable[_Union[PixelPoint, _Mapping]]] = ..., stroke_width: _Optional[float] = ...) -> None: ...

class VisualPrompt(_message.Message):
    __slots__ = ("point", "box", "polygon", "scribble", "geojson_4326")
    POINT_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    POLYGON_FIELD_NUMBER: _ClassVar[int]
    SCRIBBLE_FIELD_NUMBER: _ClassVar[int]
    GEOJSON_4326_FIELD_NUMBER: _ClassVar[int]
    point: PixelPoint
    box: PixelBox
    polygon: PixelPolygon
    scribble: PixelScribble
    geojson_4326: str
    def __init__(self, point: _Optional[_Union[PixelPoint, _Mapping]] = ..., box: _Optional[_Union[PixelBox, _Mapping]] = ..., polygon: _Optional[_Union[PixelPolygon, _Mapping]] = ..., scribble: _Optional[_Union[PixelScribble, _Mapping]] = ..., geojson_4326: _Optional[str] = ...) -> None: ...

class SceneIngested(_message.Message):
    __slots__ = ("header", "scene_id", "source", "sensor", "modality", "bands", "dtype", "width", "height", "crs", "transform", "footprint", "acquired_at", "cog", "georeferenced", "stac_item_json")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CRS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINT_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_FIELD_NUMBER: _ClassVar[int]
    COG_FIELD_NUMBER: _ClassVar[int]
    GEOREFERENCED_FIELD_NUMBER: _ClassVar[int]
    STAC_ITEM_JSON_FIELD_NUMBER: _ClassVar[int]
    header: EventHeader
    scene_id: str
    source: str
    sensor: str
    modality: Modality
    bands: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    width: int
    height: int
    crs: str
    transform: AffineTransform
    footprint: Footprint
    acquired_at: _timestamp_pb2.Timestamp
    cog: ObjectRef
    georeferenced: bool
    stac_item_json: str
    def __init__(self, header: _Optional[_Union[EventHeader, _Mapping]] = ..., scene_id: _Optional[str] = ..., source: _Optional[str] = ..., sensor: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., bands: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., crs: _Optional[str] = ..., transform: _Optional[_Union[AffineTransform, _Mapping]] = ..., footprint: _Optional[_Union[Footprint, _Mapping]] = ..., acquired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cog: _Optional[_Union[ObjectRef, _Mapping]] = ..., georeferenced: _Optional[bool] = ..., stac_item_json: _Optional[str] = ...) -> None: ...

class ObjectCreated(_message.Message):
    __slots__ = ("header", "event_name", "bucket", "key", "size_bytes", "etag", "content_type", "user_metadata", "sequencer")
    class UserMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_METADATA_FIELD_NUMBER: _ClassVar[int]
    SEQUENCER_FIELD_NUMBER: _ClassVar[int]
    header: EventHeader
    event_name: str
    bucket: str
    key: str
    size_bytes: int
    etag: str
    content_type: str
    user_metadata: _containers.ScalarMap[str, str]
    sequencer: str
    def __init__(self, header: _Optional[_Union[EventHeader, _Mapping]] = ..., event_name: _Optional[str] = ..., bucket: _Optional[str] = ..., key: _Optional[str] = ..., size_bytes: _Optional[int] = ..., etag: _Optional[str] = ..., content_type: _Optional[str] = ..., user_metadata: _Optional[_Mapping[str, str]] = ..., sequencer: _Optional[str] = ...) -> None: ...

class PromptTask(_message.Message):
    __slots__ = ("header", "task_id", "scene_id", "chip", "tile", "level", "task", "instruction", "prompts", "modality", "bands", "model_version", "parent_task_id", "aoi_id", "query_id", "nodata_fraction")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AOI_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    NODATA_FRACTION_FIELD_NUMBER: _ClassVar[int]
    header: EventHeader
    task_id: str
    scene_id: str
    chip: ObjectRef
    tile: TileWindow
    level: Level
    task: str
    instruction: str
    prompts: _containers.RepeatedCompositeFieldContainer[VisualPrompt]
    modality: Modality
    bands: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    parent_task_id: str
    aoi_id: str
    query_id: str
    nodata_fraction: float
    def __init__(self, header: _Optional[_Union[EventHeader, _Mapping]] = ..., task_id: _Optional[str] = ..., scene_id: _Optional[str] = ..., chip: _Optional[_Union[ObjectRef, _Mapping]] = ..., tile: _Optional[_Union[TileWindow, _Mapping]] = ..., level: _Optional[_Union[Level, str]] = ..., task: _Optional[str] = ..., instruction: _Optional[str] = ..., prompts: _Optional[_Iterable[_Union[VisualPrompt, _Mapping]]] = ..., modality: _Optional[_Union[Modality, str]] = ..., bands: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., parent_task_id: _Optional[str] = ..., aoi_id: _Optional[str] = ..., query_id: _Optional[str] = ..., nodata_fraction: _Optional[float] = ...) -> None: ...

class DetectedBox(_message.Message):
    __slots__ = ("box", "label", "score")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    box: PixelBox
    label: str
    score: float
    def __init__(self, box: _Optional[_Union[PixelBox, _Mapping]] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Relation(_message.Message):
    __slots__ = ("subject_index", "object_index", "predicate")
    SUBJECT_INDEX_FIELD_NUMBER: _ClassVar[int]
    OBJECT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_FIELD_NUMBER: _ClassVar[int]
    subject_index: int
    object_index: int
    predicate: str
    def __init__(self, subject_index: _Optional[int] = ..., object_index: _Optional[int] = ..., predicate: _Optional[str] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("text", "label", "boxes", "mask", "attributes", "relations", "score", "count")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RELATIONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    label: str
    boxes: _containers.RepeatedCompositeFieldContainer[DetectedBox]
    mask: ObjectRef
    attributes: _containers.ScalarMap[str, str]
    relations: _containers.RepeatedCompositeFieldContainer[Relation]
    score: float
    count: int
    def __init__(self, text: _Optional[str] = ..., label: _Optional[str] = ..., boxes: _Optional[_Iterable[_Union[DetectedBox, _Mapping]]] = ..., mask: _Optional[_Union[ObjectRef, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., relations: _Optional[_Iterable[_Union[Relation, _Mapping]]] = ..., score: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class InferenceResult(_message.Message):
    __slots__ = ("header", "task_id", "scene_id", "level", "task", "tile", "answer", "model_version", "timings_ms", "prompts", "answer_parsed", "parse_failure", "nodata_fraction")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_PARSED_FIELD_NUMBER: _ClassVar[int]
    PARSE_FAILURE_FIELD_NUMBER: _ClassVar[int]
    NODATA_FRACTION_FIELD_NUMBER: _ClassVar[int]
    header: EventHeader
    task_id: str
    scene_id: str
    level: Level
    task: str
    tile: TileWindow
    answer: Answer
    model_version: str
    timings_ms: _containers.ScalarMap[str, float]
    prompts: _containers.RepeatedCompositeFieldContainer[VisualPrompt]
    answer_parsed: bool
    parse_failure: str
    nodata_fraction: float
    def __init__(self, header: _Optional[_Union[EventHeader, _Mapping]] = ..., task_id: _Optional[str] = ..., scene_id: _Optional[str] = ..., level: _Optional[_Union[Level, str]] = ..., task: _Optional[str] = ..., tile: _Optional[_Union[TileWindow, _Mapping]] = ..., answer: _Optional[_Union[Answer, _Mapping]] = ..., model_version: _Optional[str] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., prompts: _Optional[_Iterable[_Union[VisualPrompt, _Mapping]]] = ..., answer_parsed: _Optional[bool] = ..., parse_failure: _Optional[str] = ..., nodata_fraction: _Optional[float] = ...) -> None: ...

class ResultStored(_message.Message):
    __slots__ = ("header", "task_id", "scene_id", "level", "task", "result_ids", "objects", "tile", "chip", "model_version", "timings_ms", "objects_claim", "object_count")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESULT_IDS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_CLAIM_FIELD_NUMBER: _ClassVar[int]
    OBJECT_COUNT_FIELD_NUMBER: _ClassVar[int]
    header: EventHeader
    task_id: str
    scene_id: str
    level: Level
    task: str
    result_ids: _containers.RepeatedScalarFieldContainer[str]
    objects: _containers.RepeatedCompositeFieldContainer[DetectedBox]
    tile: TileWindow
    chip: ObjectRef
    model_version: str
    timings_ms: _containers.ScalarMap[str, float]
    objects_claim: ObjectRef
    object_count: int
    def __init__(self, header: _Optional[_Union[EventHeader, _Mapping]] = ..., task_id: _Optional[str] = ..., scene_id: _Optional[str] = ..., level: _Optional[_Union[Level, str]] = ..., task: _Optional[str] = ..., result_ids: _Optional[_Iterable[str]] = ..., objects: _Optional[_Iterable[_Union[DetectedBox, _Mapping]]] = ..., tile: _Optional[_Union[TileWindow, _Mapping]] = ..., chip: _Optional[_Union[ObjectRef, _Mapping]] = ..., model_version: _Optional[str] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., objects_claim: _Optional[_Union[ObjectRef, _Mapping]] = ..., object_count: _Optional[int] = ...) -> None: ...

class DetectedBoxList(_message.Message):
    __slots__ = ("boxes",)
    BOXES_FIELD_NUMBER: _ClassVar[int]
    boxes: _containers.RepeatedCompositeFieldContainer[DetectedBox]
    def __init__(self, boxes: _Optional[_Iterable[_Union[DetectedBox, _Mapping]]] = ...) -> None: ...

class QueryRequested(_message.Message):
    __slots__ = ("header", "query_id", "instruction", "geojson_4326", "bbox_4326", "scene_id", "scene_prompt", "coverage", "owner", "standing", "name", "deactivate")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    GEOJSON_4326_FIELD_NUMBER: _ClassVar[int]
    BBOX_4326_FIELD_NUMBER: _ClassVar[int]
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    SCENE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STANDING_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEACTIVATE_FIELD_NUMBER: _ClassVar[int]
    header: EventHeader
    query_id: str
    instruction: str
    geojson_4326: str
    bbox_4326: _containers.RepeatedScalarFieldContainer[float]
    scene_id: str
    scene_prompt: VisualPrompt
    coverage: QueryCoverage
    owner: str
    standing: bool
    name: str
    deactivate: bool
    def __init__(self, header: _Optional[_Union[EventHeader, _Mapping]] = ..., query_id: _Optional[str] = ..., instruction: _Optional[str] = ..., geojson_4326: _Optional[str] = ..., bbox_4326: _Optional[_Iterable[float]] = ..., scene_id: _Optional[str] = ..., scene_prompt: _Optional[_Union[VisualPrompt, _Mapping]] = ..., coverage: _Optional[_Union[QueryCoverage, str]] = ..., owner: _Optional[str] = ..., standing: _Optional[bool] = ..., name: _Optional[str] = ..., deactivate: _Optional[bool] = ...) -> None: ...

class RecordHeader(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("header", "cause", "reason", "error_type", "consumer_group", "source_topic", "source_partition", "source_offset", "source_key", "source_timestamp", "source_headers", "payload", "payload_truncated", "payload_claim", "payload_size", "payload_sha256", "attempts", "expected_type")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_GROUP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HEADERS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_CLAIM_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_TYPE_FIELD_NUMBER: _ClassVar[int]
    header: EventHeader
    cause: DeadLetterCause
    reason: str
    error_type: str
    consumer_group: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_key: bytes
    source_timestamp: _timestamp_pb2.Timestamp
    source_headers: _containers.RepeatedCompositeFieldContainer[RecordHeader]
    payload: bytes
    payload_truncated: bool
    payload_claim: ObjectRef
    payload_size: int
    payload_sha256: str
    attempts: int
    expected_type: str
    def __init__(self, header: _Optional[_Union[EventHeader, _Mapping]] = ..., cause: _Optional[_Union[DeadLetterCause, str]] = ..., reason: _Optional[str] = ..., error_type: _Optional[str] = ..., consumer_group: _Optional[str] = ..., source_topic: _Optional[str] = ..., source_partition: _Optional[int] = ..., source_offset: _Optional[int] = ..., source_key: _Optional[bytes] = ..., source_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_headers: _Optional[_Iterable[_Union[RecordHeader, _Mapping]]] = ..., payload: _Optional[bytes] = ..., payload_truncated: _Optional[bool] = ..., payload_claim: _Optional[_Union[ObjectRef, _Mapping]] = ..., payload_size: _Optional[int] = ..., payload_sha256: _Optional[str] = ..., attempts: _Optional[int] = ..., expected_type: _Optional[str] = ...) -> None: ...
