"""The order gateway: strategy orders -> risk checks -> an exchange -> fills -> positions.

Pure parts: ``orders`` (the data and field validation), ``risk`` (pre-trade checks),
``positions`` (average-cost PnL).  I/O parts: ``exchanges`` (paper and Binance adapters).
"""
