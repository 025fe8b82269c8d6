"""The harness: checkout → environment → sandboxed test run → parse → grade."""
