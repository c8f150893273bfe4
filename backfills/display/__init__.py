"""What people see: live progress (rich, plain, JSON), the command's tables, and the one set of
formatting helpers they share. Nothing here reads or writes the database."""
