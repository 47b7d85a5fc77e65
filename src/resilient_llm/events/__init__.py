"""The one event stream of a call and the record `outcome()` reads."""
