from .driver import (Database, WorkspaceDatabases, errors, migrations_from_dir, sqlite_module,
                     vec_blob, vec_unblob, versions)

__all__ = ["Database", "WorkspaceDatabases", "errors", "migrations_from_dir", "sqlite_module",
           "vec_blob", "vec_unblob", "versions"]
