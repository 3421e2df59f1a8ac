"""The committed tables and the evidence behind them."""
