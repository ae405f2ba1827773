"""The Kedro project around the library: hooks, catalog datasets, and the validation of
the parameter blocks of conf/."""
