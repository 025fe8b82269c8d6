"""`forge solve`: the five stages on an operator's own task, its recorded runs, and the
operator's feedback on them (which `forge datasets build` turns into rows)."""
