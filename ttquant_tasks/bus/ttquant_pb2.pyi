from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class MarketData(_message.Message):
    __slots__ = ("symbol", "last_price", "volume", "exchange_time", "local_time", "exchange", "price_str", "volume_str", "trade_id")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TIME_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    PRICE_STR_FIELD_NUMBER: _ClassVar[int]
    VOLUME_STR_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    last_price: float
    volume: float
    exchange_time: int
    local_time: int
    exchange: str
    price_str: str
    volume_str: str
    trade_id: int
    def __init__(self, symbol: _Optional[str] = ..., last_price: _Optional[float] = ..., volume: _Optional[float] = ..., exchange_time: _Optional[int] = ..., local_time: _Optional[int] = ..., exchange: _Optional[str] = ..., price_str: _Optional[str] = ..., volume_str: _Optional[str] = ..., trade_id: _Optional[int] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("order_id", "strategy_id", "symbol", "price", "volume", "side", "timestamp", "quantity")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    strategy_id: str
    symbol: str
    price: float
    volume: int
    side: str
    timestamp: int
    quantity: str
    def __init__(self, order_id: _Optional[str] = ..., strategy_id: _Optional[str] = ..., symbol: _Optional[str] = ..., price: _Optional[float] = ..., volume: _Optional[int] = ..., side: _Optional[str] = ..., timestamp: _Optional[int] = ..., quantity: _Optional[str] = ...) -> None: ...

class Trade(_message.Message):
    __slots__ = ("trade_id", "order_id", "strategy_id", "symbol", "side", "filled_price", "filled_volume", "trade_time", "status", "error_code", "error_message", "is_retryable", "commission", "filled_quantity", "filled_price_str")
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    FILLED_PRICE_FIELD_NUMBER: _ClassVar[int]
    FILLED_VOLUME_FIELD_NUMBER: _ClassVar[int]
    TRADE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IS_RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    COMMISSION_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    FILLED_PRICE_STR_FIELD_NUMBER: _ClassVar[int]
    trade_id: str
    order_id: str
    strategy_id: str
    symbol: str
    side: str
    filled_price: float
    filled_volume: int
    trade_time: int
    status: str
    error_code: int
    error_message: str
    is_retryable: bool
    commission: float
    filled_quantity: str
    filled_price_str: str
    def __init__(self, trade_id: _Optional[str] = ..., order_id: _Optional[str] = ..., strategy_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[str] = ..., filled_price: _Optional[float] = ..., filled_volume: _Optional[int] = ..., trade_time: _Optional[int] = ..., status: _Optional[str] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., is_retryable: _Optional[bool] = ..., commission: _Optional[float] = ..., filled_quantity: _Optional[str] = ..., filled_price_str: _Optional[str] = ...) -> None: ...
