"""Entity snapshots: the latest state of each patient, appointment, invoice and form, and the event context built from them."""
