"""The jobs behind both front doors (the command line and the Python API): plain functions that
do the work and return what they did; ``cli/`` parses and prints, ``api/`` wraps for notebooks."""
