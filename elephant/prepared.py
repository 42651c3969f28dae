"""Reads compiled once: the SQL of a fixed-shape ORM read, reused with new values.

The beat's sweeps run the same few reads every 15 seconds and every minute, most finding a handful of
rows or none. Building and compiling such a queryset costs Django 20 to 50 times what SQLite or
PostgreSQL spend answering it (docs/benchmarks.md, Speed). A ``PreparedRead`` builds its queryset
once per database connection and value shape, with a marker in place of each value; it finds
where each marker landed among the compiled SQL's parameters, and from then on executes that SQL
with the values of the call, converting rows with the compiler Django made (its own converters:
datetimes from SQLite's text, booleans, and so on). The query is the ORM's, so it stays in step
with the models and the database; only the values change.

    _due = PreparedRead(lambda *, until: Meeting.objects.filter(meet_time__lte=until).values_list("pk"))
    _due(until=now)  # -> [("abc",), ...]

Values are passed by name. A value may be an aware ``datetime``, a ``str``, an ``int`` or a ``float`` (each
compared to a column of its kind: the datetime goes through the backend's datetime adapter), or a
list or tuple of them (one statement per list length, as Django compiles one ``IN (%s, ...)``
per length). ``None`` and booleans change a query's shape, not a value: they are compiled into it
(the same value always gives the same SQL), as is a ``Q`` condition, values and all (a condition
with other values is another shape). ``PreparedUpdate`` is the same for ``UPDATE`` (``many``: a batch of
them as one ``executemany`` per shape), ``PreparedInsert`` for the ``INSERT`` of a model's rows.

The builder must use each value as given: a value it derives from (``now - timedelta(...)``) is a
new value the marker would not be found as; pass the derived value instead. A builder that hides a
value this way fails at its first call, not silently. A statement is kept per connection (a thread's
own) and shape, at most ``MAX_SHAPES`` of them per prepared read.
"""

import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from django.core.exceptions import EmptyResultSet
from django.db import connections, transaction
from django.db.models import Q, QuerySet, sql
from django.db.transaction import TransactionManagementError

# A marker datetime: far from any real one, its microseconds telling the markers apart.
_MARKER_EPOCH = datetime(1901, 2, 3, 4, 5, 6, tzinfo=UTC)
_MARKER_INT = -7_318_000_000_000  # ints below this: no query's constant
_MARKER_FLOAT = -7.318e15  # floats below this (whole, exactly representable): no query's constant either
# The kinds of value a call passes (besides aware datetimes): each gets a marker of its own kind.
_SCALARS = (str, int, float)


class PreparedReadError(RuntimeError):
    """A builder that does not use its values as given (a programming error)."""


class _Compiled:
    __slots__ = ("sql", "slots", "compiler", "converters", "columns", "row_class", "models", "locks")

    def __init__(self, sql, slots, compiler, converters, columns, row_class, models=None, locks=False):
        self.sql = sql
        self.locks = locks  # SELECT ... FOR UPDATE: only inside a transaction, as the ORM checks
        self.slots = slots  # per SQL parameter: (name, index within a list or None) or (None, constant)
        self.compiler = compiler
        self.converters = converters
        self.columns = columns
        self.row_class = row_class
        self.models = models  # model rows: what ModelIterable works out from the compiler, once


class _Models:
    """How ``ModelIterable`` makes instances from a compiled query's rows (django.db.models.query),
    worked out once: the model's columns, the ``select_related`` populators and the annotations."""

    __slots__ = ("model", "db", "init_list", "start", "end", "related", "annotations", "build", "related_builds")

    def __init__(self, compiler, db):
        from django.db.models.query import get_related_populators

        select, klass_info = compiler.select, compiler.klass_info
        self.model = klass_info["model"]
        self.db = db
        fields = klass_info["select_fields"]
        self.start, self.end = fields[0], fields[-1] + 1
        self.init_list = [column[0].target.attname for column in select[self.start : self.end]]
        self.related = get_related_populators(klass_info, select, db)
        self.annotations = list(compiler.annotation_col_map.items())
        self.build = _builder(self.model, db, self.init_list)
        # Each select_related populator this class fills itself (no nested one, columns in the model's order).
        self.related_builds = [
            _builder(p.model_cls, db, p.init_list) if not p.related_populators and p.reorder_for_init is None else None
            for p in self.related
        ]

    def make(self, rows) -> list:
        made = []
        start, end, model, db, names = self.start, self.end, self.model, self.db, self.init_list
        build = self.build if self.build is not None and _signals_quiet(model) else None
        related = [
            (populator, related_build if related_build is not None and _signals_quiet(populator.model_cls) else None)
            for populator, related_build in zip(self.related, self.related_builds, strict=True)
        ]
        for row in rows:
            obj = build(row[start:end]) if build is not None else model.from_db(db, names, row[start:end])
            for populator, related_build in related:
                if related_build is None:
                    populator.populate(row, obj)
                    continue
                data = row[populator.cols_start : populator.cols_end]
                other = None if data[populator.pk_idx] is None else related_build(data)
                populator.local_setter(obj, other)
                if other is not None:
                    populator.remote_setter(other, obj)
            for name, position in self.annotations:
                setattr(obj, name, row[position])
            made.append(obj)
        return made


def _signals_quiet(model) -> bool:
    """No ``pre_init`` or ``post_init`` receiver for ``model`` now (asked at each read, not once)."""
    from django.db.models.signals import post_init, pre_init

    return not pre_init.has_listeners(model) and not post_init.has_listeners(model)


def _builder(model, db: str, names: list[str]) -> Callable[[Any], Any] | None:
    """Makes ``model``'s instance of one row's values for the fields ``names``, loaded from ``db``: what
    ``Model.from_db`` makes, or None where the two could differ. Where nothing can tell them apart (no
    ``from_db`` or ``__init__`` of the model's own, each field's attribute a plain one: ``_plain_attribute``;
    and, checked at each read, no ``pre_init`` or ``post_init`` receiver), the values go straight into the
    instance's ``__dict__``, as ``Model.__init__`` would set them one by one (a field not loaded stays
    deferred: loaded on first access, as Django's). ``from_db`` builds the whole list of values with a
    deferred marker per field not read, looking each field up in the list of names, then ``__init__`` walks
    every field: for the health sweep's hosts, most of what a row cost."""
    from django.db.models import Model
    from django.db.models.base import ModelState

    plain = (
        model.from_db.__func__ is Model.from_db.__func__
        and model.__init__ is Model.__init__
        and len(set(names)) == len(names)
        and all(_plain_attribute(model, name) for name in names)
    )
    if not plain:
        return None
    new = model.__new__

    def build(values):
        obj = new(model)
        state = ModelState()
        state.adding, state.db = False, db
        obj.__dict__["_state"] = state
        obj.__dict__.update(zip(names, values, strict=True))
        return obj

    return build


def _plain_attribute(model, name: str) -> bool:
    """Setting the field's attribute on a new instance only stores the value: no descriptor with a ``__set__``
    of its own (a foreign key's id has one, which on a new instance, with nothing cached, only stores it)."""
    from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute

    descriptor = model.__dict__.get(name, getattr(model, name, None))
    return type(descriptor) is ForeignKeyDeferredAttribute or not hasattr(type(descriptor), "__set__")


class PreparedRead:
    """A read whose SQL is compiled once per connection and shape (``build(**markers)`` gives the
    queryset). Calling it returns the rows as a list: model instances for a plain queryset (with
    its ``select_related``, ``only`` and annotations, as iterating it gives), tuples for
    ``values_list`` (named tuples with ``named=True``; the values themselves with ``flat=True``),
    dicts for ``values``. ``select_for_update`` locks as the ORM's does, and like it refuses to run
    outside a transaction (``TransactionManagementError``). Not for ``prefetch_related``.

    ``raw``: the rows as the database driver gives them, without Django's converters (on SQLite a boolean
    is 0 or 1, a datetime naive text or whatever the driver makes of it): for reads of thousands of rows
    whose columns are numbers and text, where a converter call per value costs more than the read."""

    def __init__(self, build: Callable[..., QuerySet], *, using: str = "default", raw: bool = False):
        self._build = build
        self._using = using
        self._raw = raw
        self._compiled: WeakKeyDictionary = WeakKeyDictionary()  # connection -> shape -> _Compiled
        self._lock = threading.Lock()

    def __call__(self, **values: Any) -> list:
        connection = connections[self._using]
        compiled = _cached(self, connection, values, self._compile)
        if compiled.sql is None:  # a filter nothing can match (``pk__in=[]``): no query, as the ORM
            return []
        if compiled.locks and connection.get_autocommit():
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        params = _params(compiled.slots, values, connection)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        if compiled.converters and not self._raw:
            rows = list(compiled.compiler.apply_converters(rows, compiled.converters))
        if compiled.models is not None:
            return compiled.models.make(rows)
        if compiled.row_class == "flat":
            return [row[0] for row in rows]
        if compiled.row_class == "dict":
            return [dict(zip(compiled.columns, row, strict=True)) for row in rows]
        if compiled.row_class is not None:
            return [compiled.row_class._make(row) for row in rows]
        return [tuple(row) for row in rows]

    def get(self, **values: Any):
        """The one row, as ``QuerySet.get`` gives it: ``DoesNotExist`` for none, ``MultipleObjectsReturned``
        for more (its model's own exceptions)."""
        rows = self(**values)
        if len(rows) == 1:
            return rows[0]
        model = _cached(self, connections[self._using], values, self._compile).compiler.query.model
        if not rows:
            raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
        raise model.MultipleObjectsReturned(
            f"get() returned more than one {model._meta.object_name} -- it returned {len(rows)}!"
        )

    def _compile(self, connection, values: dict[str, Any]) -> _Compiled:
        arguments, markers = _markers(connection, values)
        queryset = self._build(**arguments)
        if queryset._prefetch_related_lookups:
            raise PreparedReadError("a prepared read does not prefetch")
        features = connection.features
        # Where the ORM would check for a transaction at each compile (compiler.as_sql): at each call.
        locks = bool(
            queryset.query.select_for_update and features.has_select_for_update and features.supports_transactions
        )
        compiler = queryset.query.get_compiler(using=self._using, connection=connection)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:
            return _Compiled(None, [], compiler, [], [], None)
        slots = _slots(params, markers)
        fields = [column[0] for column in compiler.select[0 : compiler.col_count]]
        converters = compiler.get_converters(fields)
        query = queryset.query
        columns = [*query.extra_select, *query.values_select, *query.annotation_select]
        iterable = queryset._iterable_class.__name__
        if iterable == "ModelIterable":
            models = _Models(compiler, self._using)
            return _Compiled(sql, slots, compiler, converters, columns, None, models, locks)
        if iterable == "FlatValuesListIterable":
            row_class = "flat"
        elif iterable == "ValuesIterable":
            row_class = "dict"
        elif iterable == "NamedValuesListIterable":
            row_class = namedtuple("Row", columns)
        elif iterable == "ValuesListIterable":
            row_class = None
        else:
            raise PreparedReadError(f"a prepared read gives values() or values_list() rows, not {iterable}")
        return _Compiled(sql, slots, compiler, converters, columns, row_class, None, locks)


class PreparedUpdate:
    """``UPDATE`` compiled once per connection and shape: ``build(**markers)`` gives the queryset of
    the rows to change (as for ``PreparedRead``); a call passes the new values as ``set`` (each a
    datetime, string or int, or a bool or None, which are part of the shape) and the filter's values
    by name, and returns the number of rows changed, as ``QuerySet.update`` does (``fixed``: SET
    expressions that never change, such as ``F("version") + 1``). New values the statement cannot take
    as parameters (an expression: ``F("sequence") + 1``) go through ``QuerySet.update`` of the same rows.
    Not for updates that reach related models' tables (``QuerySet.update`` runs those as separate
    statements)."""

    def __init__(self, build: Callable[..., QuerySet], *, fixed: dict | None = None, using: str = "default"):
        self._build = build
        self._fixed = dict(fixed or {})
        self._using = using
        self._compiled: WeakKeyDictionary = WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, set: dict[str, Any], **where: Any) -> int:  # noqa: A002 (SQL's word)
        if not settable(set):  # an expression among the new values: the ORM's update, built this once
            return self._build(**where).update(**set, **self._fixed)
        connection = connections[self._using]
        values = _with_set(set, where)
        compiled = _cached(self, connection, values, self._compile)
        if compiled.sql is None:  # a filter nothing can match: no rows change, no query, as the ORM
            return 0
        params = _params(compiled.slots, values, connection)
        with transaction.mark_for_rollback_on_error(using=self._using), connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            return cursor.rowcount

    def many(self, calls: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> int:
        """Many updates, each ``(set, where)`` as one call takes them, in one transaction: the calls of
        one shape as one ``executemany`` (what ``bulk_update`` does with a CASE per row, without
        building one), those with an expression among their new values one by one. Returns the rows
        changed, all calls together."""
        connection = connections[self._using]
        batches: dict[_Compiled, list] = {}  # each shape's statement -> its calls' parameters
        singles = []
        for set_values, where in calls:
            if not settable(set_values):
                singles.append((set_values, where))
                continue
            values = _with_set(set_values, where)
            compiled = _cached(self, connection, values, self._compile)
            if compiled.sql is not None:
                batches.setdefault(compiled, []).append(_params(compiled.slots, values, connection))
        if not batches and not singles:
            return 0
        changed = 0
        with transaction.atomic(using=self._using, savepoint=False):
            with connection.cursor() as cursor:
                for compiled, rows in batches.items():
                    cursor.executemany(compiled.sql, rows)
                    changed += max(cursor.rowcount, 0)  # the sum over the rows (sqlite3, psycopg 3)
            for set_values, where in singles:
                changed += self(set_values, **where)
        return changed

    def _compile(self, connection, values: dict[str, Any]) -> _Compiled:
        arguments, markers = _markers(connection, values)
        where = {name: value for name, value in arguments.items() if not name.startswith(_SET)}
        updates = {name.removeprefix(_SET): value for name, value in arguments.items() if name.startswith(_SET)}
        query = self._build(**where).query.chain(sql.UpdateQuery)
        query.add_update_values({**updates, **self._fixed})
        query.clear_select_clause()
        if query.related_updates:
            raise PreparedReadError("a prepared update changes one table")
        compiler = query.get_compiler(using=self._using, connection=connection)
        try:
            statement, params = compiler.as_sql()
        except EmptyResultSet:
            return _Compiled(None, [], compiler, [], [], None)
        return _Compiled(statement, _slots(params, markers), compiler, [], [], None)


class PreparedInsert:
    """``INSERT`` of a model's rows, compiled once per connection: what ``bulk_create`` sends for rows
    without a primary key (every concrete column; defaults and ``auto_now_add`` filled in by the model's
    own fields, values adapted by them), without building the statement each time. As ``bulk_create``,
    no ``save()``, no signals, and the new rows' ids are not read back: for the append-only logs
    (meeting and host events) the sweeps write at every transition."""

    def __init__(self, model, *, using: str = "default"):
        self._model = model
        self._using = using
        self._compiled: WeakKeyDictionary = WeakKeyDictionary()  # connection -> (sql, fields)
        self._lock = threading.Lock()

    def __call__(self, **values: Any) -> None:
        self.many([values])

    def many(self, rows: Iterable[dict[str, Any]]) -> None:
        connection = connections[self._using]
        rows = list(rows)
        if not rows:
            return
        if any(hasattr(value, "resolve_expression") for values in rows for value in values.values()):
            objs = [self._model(**values) for values in rows]
            self._model._default_manager.using(self._using).bulk_create(objs)  # SQL of its own: the ORM's
            return
        statement, fields, plain = self._statement(connection, rows[0])
        if plain and _signals_quiet(self._model) and all(plain.issuperset(values) for values in rows):
            # Each column's value as the model's instance would give it, without making one (an event row a
            # transition: Model.__init__ with keywords walks every field).
            params = [_insert_params(fields, values, connection) for values in rows]
        else:
            objs = [self._model(**values) for values in rows]
            params = [
                [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields] for obj in objs
            ]
        if len(params) == 1:
            with transaction.mark_for_rollback_on_error(using=self._using), connection.cursor() as cursor:
                cursor.execute(statement, params[0])
            return
        with transaction.atomic(using=self._using, savepoint=False), connection.cursor() as cursor:
            cursor.executemany(statement, params)  # all the rows or none, as bulk_create

    def _statement(self, connection, values: dict[str, Any]) -> tuple[str, list, frozenset]:
        """The statement, its fields, and the names a row may give for the values to be worked out without
        an instance (empty: always through one)."""
        compiled = self._compiled.get(connection)
        if compiled is None:
            opts = self._model._meta
            fields = [f for f in opts.concrete_fields if not f.generated and f is not opts.auto_field]
            query = sql.InsertQuery(self._model)
            query.insert_values(fields, [self._model(**values)])
            ((statement, _),) = query.get_compiler(using=self._using, connection=connection).as_sql()
            plain = _insert_fields_plain(self._model, fields)
            compiled = (statement, fields, frozenset(f.attname for f in fields) if plain else frozenset())
            with self._lock:
                self._compiled[connection] = compiled
        return compiled


def _insert_fields_plain(model, fields) -> bool:
    """Whether a row's values can be worked out as an instance would give them without making one: no
    ``__init__`` of the model's own, and each field's ``pre_save`` the base one (the value as set) or the
    date fields' (``auto_now``/``auto_now_add``: the time now). ``pre_init``/``post_init`` receivers are asked
    at each insert (``many``)."""
    from django.db.models import DateField, DateTimeField, Field, Model

    known = {Field.pre_save, DateField.pre_save, DateTimeField.pre_save}
    return model.__init__ is Model.__init__ and all(type(field).pre_save in known for field in fields)


def _insert_params(fields, values: dict[str, Any], connection) -> list:
    """The INSERT's parameters for one row given by field attribute names: the value given, else the field's
    default (as ``Model.__init__`` fills it), the time now for ``auto_now``/``auto_now_add`` (as ``pre_save``
    on an insert), each adapted by its field."""
    from django.utils import timezone

    params = []
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value = timezone.now()
        elif field.attname in values:
            value = values[field.attname]
        else:
            value = field.get_default()
        params.append(field.get_db_prep_save(value, connection))
    return params


_SET = "\x1fset:"


def _with_set(set_values: dict[str, Any], where: dict[str, Any]) -> dict[str, Any]:
    """An update's values as one shape: the filter's by name, the new ones under ``_SET``."""
    return {**where, **{_SET + name: value for name, value in set_values.items()}}


# Shapes kept per connection and prepared statement before the least recently used is dropped (a list's
# length is part of a shape: a read by a list of ids of every length would otherwise keep one for each).
# The shapes of a connection are its own thread's: only that thread changes them.
MAX_SHAPES = 64


def _cached(prepared, connection, values: dict[str, Any], compile_one) -> _Compiled:
    shape = tuple(sorted((name, _shape_of(name, value)) for name, value in values.items()))
    shapes = prepared._compiled.get(connection)
    if shapes is None:
        with prepared._lock:
            shapes = prepared._compiled.setdefault(connection, OrderedDict())
    compiled = shapes.get(shape)
    if compiled is None:
        compiled = compile_one(connection, values)
        if len(shapes) >= MAX_SHAPES:
            # The least recently used goes: a shape met once (a condition carrying this call's time) does
            # not push out the ones every call uses.
            shapes.popitem(last=False)
        shapes[shape] = compiled
    else:
        shapes.move_to_end(shape)
    return compiled


def _params(slots, values: dict[str, Any], connection) -> list:
    params = []
    adapt = connection.ops.adapt_datetimefield_value
    for name, index in slots:
        if name is None:
            params.append(index)
            continue
        value = values[name] if index is None else values[name][index]
        params.append(adapt(value) if isinstance(value, datetime) else value)
    return params


def _markers(connection, values: dict[str, Any]) -> tuple[dict[str, Any], dict[Any, tuple[str, int | None]]]:
    """The builder's arguments (a marker in place of each value) and, per marker as the compiled
    parameters carry it, the value it stands for (name, and index within a list)."""
    markers: dict[Any, tuple[str, int | None]] = {}
    arguments: dict[str, Any] = {}
    counter = iter(range(1, 10**6))
    for name, value in values.items():
        if isinstance(value, list | tuple):
            arguments[name] = [_marker(item, next(counter), name) for item in value]
            for index, marker in enumerate(arguments[name]):
                markers[_adapted(connection, marker)] = (name, index)
        elif _is_markable(value):
            arguments[name] = _marker(value, next(counter), name)
            markers[_adapted(connection, arguments[name])] = (name, None)
        else:
            arguments[name] = value  # None, a bool or a Q: part of the shape
    return arguments, markers


def _slots(params, markers: dict[Any, tuple[str, int | None]]) -> list[tuple]:
    """Per compiled parameter: the value it takes (name, index), or (None, the constant)."""
    slots = []
    found = set()
    for param in params:
        slot = markers.get(param) if _hashable(param) else None
        if slot is None:
            slots.append((None, param))
        else:
            slots.append(slot)
            found.add(slot)
    missing = sorted(
        {name.removeprefix(_SET) for name, _ in markers.values()} - {name.removeprefix(_SET) for name, _ in found}
    )
    if missing:
        raise PreparedReadError(
            f"the query does not use {', '.join(missing)} as given (a value derived from it is not a marker)"
        )
    return slots


def _shape_of(name: str, value: Any) -> Any:
    if isinstance(value, list | tuple):
        if not all(_is_markable(item) for item in value):
            raise PreparedReadError(f"{name}: a list of datetimes, strings, ints or floats, not {value!r}")
        return ("list", len(value))
    if _is_markable(value):
        return type(value).__name__
    if value is None or isinstance(value, bool):
        return ("value", value)
    if isinstance(value, Q):
        # A condition the caller composed: part of the shape, all of it (its values too, so a condition
        # with other values is another statement, never this one's with stale values).
        return ("condition", repr(value))
    raise PreparedReadError(
        f"{name}: a datetime, string, int, float, bool, None, Q or a list, not {type(value).__name__}"
    )


def settable(values: dict[str, Any]) -> bool:
    """Whether ``PreparedUpdate`` runs these SET values through its compiled statement (else through the
    ORM's update): each an aware datetime, a string, an int, a float, a bool or None, not an expression."""
    return all(
        value is None or isinstance(value, _SCALARS) or (isinstance(value, datetime) and value.tzinfo is not None)
        for value in values.values()
    )


def _is_markable(value: Any) -> bool:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise PreparedReadError("a prepared read takes aware datetimes")
        return True
    return isinstance(value, _SCALARS) and not isinstance(value, bool)


def _marker(value: Any, number: int, name: str) -> Any:
    if isinstance(value, datetime):
        return _MARKER_EPOCH + timedelta(microseconds=number)
    if isinstance(value, str):
        return f"\x1fprepared:{name}:{number}\x1f"
    if isinstance(value, int) and not isinstance(value, bool):
        return _MARKER_INT - number
    if isinstance(value, float):
        return _MARKER_FLOAT - number
    raise PreparedReadError(f"{name}: a list of datetimes, strings, ints or floats, not {value!r}")


def _adapted(connection, marker: Any) -> Any:
    return connection.ops.adapt_datetimefield_value(marker) if isinstance(marker, datetime) else marker


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
