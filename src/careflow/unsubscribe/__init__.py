"""One-click unsubscribe (RFC 8058): the signed link in every email's ``List-Unsubscribe``,
and what following it does."""
