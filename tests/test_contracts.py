"""Feature contracts: reason kinds, compatibility laws, schema files and YAML error messages."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops.contracts import (
    LOSSLESS_WIDENINGS,
    ContractCheck,
    ContractStatus,
    DType,
    Feature,
    FeatureContract,
    FeatureSchema,
    FeatureSchemaSource,
    FileSchemaSource,
    ReasonKind,
    load_contract_file,
    parse_contract_ref,
    validate_contract,
    widens,
    write_schema,
)
from modelops.errors import NotFoundError, SpecError
from modelops.yamlio import format_validation_error, load_yaml_model, read_yaml_mapping

# ---------------------------------------------------------------------------- helpers


def feat(
    name: str, dtype: str = "int32", nullable: bool = False, ref: str | None = None
) -> Feature:
    return Feature(name=name, dtype=DType(dtype), nullable=nullable, definition_ref=ref)


def contract(*features: Feature, name: str = "churn", version: int = 1) -> FeatureContract:
    return FeatureContract(name=name, version=version, features=list(features))


def schema(*features: Feature, version: int = 1) -> FeatureSchema:
    return FeatureSchema(version=version, features=list(features))


def kinds(check: ContractCheck) -> list[tuple[str, ReasonKind]]:
    return [(r.feature, r.kind) for r in check.reasons]


# ---------------------------------------------------------------------------- models


def test_contract_ref_and_by_name() -> None:
    c = contract(feat("a"), feat("b"), name="churn.features", version=3)
    assert c.ref == "churn.features@3"
    assert list(c.by_name()) == ["a", "b"]
    s = schema(feat("x"), feat("y", "string"))
    assert s.by_name()["y"].dtype is DType.STRING


def test_contract_rejects_duplicate_names() -> None:
    with pytest.raises(pydantic.ValidationError, match="duplicate feature names 'a'"):
        contract(feat("a"), feat("b"), feat("a", "bool"))


@pytest.mark.parametrize("bad", ["", "a b", "x@y", "naïve", "a/b"])
def test_feature_name_must_be_identifier_like(bad: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="not a valid name"):
        feat(bad)


@pytest.mark.parametrize("good", ["a", "A_1", "user.age-days", "7d_count", "_x"])
def test_feature_name_accepts_allowed_characters(good: str) -> None:
    assert feat(good).name == good


def test_contract_version_must_be_positive() -> None:
    with pytest.raises(pydantic.ValidationError):
        FeatureContract(name="c", version=0, features=[])


def test_parse_contract_ref() -> None:
    assert parse_contract_ref("churn@3") == ("churn", 3)
    assert parse_contract_ref("user.features-v2@12") == ("user.features-v2", 12)


@pytest.mark.parametrize("bad", ["churn", "churn@", "@3", "churn@0", "churn@x", "a@1@2", "a b@1"])
def test_parse_contract_ref_rejects_bad_forms(bad: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_contract_ref(bad)
    message = str(info.value)
    assert "NAME@VERSION" in message
    assert repr(bad) in message
    assert "\n" not in message


# ---------------------------------------------------------------------------- widening table


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("bool", "int8"),
        ("bool", "int64"),
        ("bool", "float16"),
        ("bool", "float64"),
        ("int8", "int16"),
        ("int8", "int64"),
        ("int16", "int32"),
        ("int32", "int64"),
        ("int8", "float32"),
        ("int16", "float64"),
        ("int32", "float64"),
        ("float16", "float32"),
        ("float16", "float64"),
        ("float32", "float64"),
    ],
)
def test_lossless_widenings(src: str, dst: str) -> None:
    assert widens(DType(src), DType(dst))


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("int64", "float64"),
        ("int32", "float32"),
        ("int16", "float16"),
        ("float32", "int64"),
        ("int64", "int32"),
        ("float64", "float32"),
        ("int8", "bool"),
        ("string", "bytes"),
        ("bytes", "string"),
        ("timestamp", "int64"),
        ("int64", "timestamp"),
        ("bool", "string"),
    ],
)
def test_lossy_or_unrelated_conversions_do_not_widen(src: str, dst: str) -> None:
    assert not widens(DType(src), DType(dst))


def test_opaque_types_only_equal_themselves() -> None:
    for opaque in (DType.STRING, DType.BYTES, DType.TIMESTAMP):
        assert LOSSLESS_WIDENINGS[opaque] == frozenset({opaque})
        assert all(not widens(other, opaque) for other in DType if other is not opaque)


# ---------------------------------------------------------------------------- one reason each


def test_identical_schema_is_ok() -> None:
    features = (feat("a"), feat("b", "string", nullable=True, ref="defs/b"))
    check = validate_contract(contract(*features, version=4), schema(*features, version=7))
    assert check.status is ContractStatus.OK
    assert check.reasons == []
    assert check.schema_version == 7
    assert check.contract_ref == "churn@4"
    assert not check.breaking


def test_dropped() -> None:
    check = validate_contract(contract(feat("a"), feat("b")), schema(feat("a")))
    assert check.status is ContractStatus.BREAKING_CHANGE
    assert kinds(check) == [("b", ReasonKind.DROPPED)]
    assert check.reasons[0].breaking
    assert "'b'" in check.reasons[0].detail


def test_renamed_via_definition_ref() -> None:
    c = contract(feat("a"), feat("age", ref="defs/user_age"))
    s = schema(feat("a"), feat("user_age", ref="defs/user_age"))
    check = validate_contract(c, s)
    assert check.status is ContractStatus.BREAKING_CHANGE
    # the rename target is consumed: it is not also reported as ADDED
    assert kinds(check) == [("age", ReasonKind.RENAMED)]
    assert check.reasons[0].breaking
    assert "'user_age'" in check.reasons[0].detail


def test_rename_needs_a_non_null_matching_definition_ref() -> None:
    c = contract(feat("age"))
    s = schema(feat("user_age"))
    assert kinds(validate_contract(c, s)) == [
        ("age", ReasonKind.DROPPED),
        ("user_age", ReasonKind.ADDED),
    ]
    c = contract(feat("age", ref="defs/a"))
    s = schema(feat("user_age", ref="defs/other"))
    assert kinds(validate_contract(c, s))[0] == ("age", ReasonKind.DROPPED)


def test_rename_target_must_not_be_a_contract_feature() -> None:
    # 'b' shares the definition but the model already reads 'b' itself
    c = contract(feat("a", ref="defs/x"), feat("b", ref="defs/x"))
    s = schema(feat("b", ref="defs/x"))
    assert kinds(validate_contract(c, s)) == [("a", ReasonKind.DROPPED)]


def test_renamed_feature_also_reports_its_type_change() -> None:
    c = contract(feat("age", "int32", ref="defs/age"))
    s = schema(feat("user_age", "int64", nullable=True, ref="defs/age"))
    assert kinds(validate_contract(c, s)) == [
        ("age", ReasonKind.RENAMED),
        ("age", ReasonKind.DTYPE_NARROWED),
        ("age", ReasonKind.NOW_NULLABLE),
    ]


def test_dtype_widened_is_compatible() -> None:
    check = validate_contract(contract(feat("a", "int32")), schema(feat("a", "int16")))
    assert check.status is ContractStatus.COMPATIBLE_EXTENSION
    assert kinds(check) == [("a", ReasonKind.DTYPE_WIDENED)]
    assert not check.reasons[0].breaking
    assert "int16" in check.reasons[0].detail and "int32" in check.reasons[0].detail


def test_dtype_narrowed_is_breaking() -> None:
    check = validate_contract(contract(feat("a", "int32")), schema(feat("a", "int64")))
    assert check.status is ContractStatus.BREAKING_CHANGE
    assert kinds(check) == [("a", ReasonKind.DTYPE_NARROWED)]
    assert check.reasons[0].breaking


@pytest.mark.parametrize(
    ("expected", "supplied"),
    [("int32", "string"), ("float64", "int64"), ("timestamp", "int64"), ("bytes", "string")],
)
def test_dtype_incompatible_is_breaking(expected: str, supplied: str) -> None:
    check = validate_contract(contract(feat("a", expected)), schema(feat("a", supplied)))
    assert check.status is ContractStatus.BREAKING_CHANGE
    assert kinds(check) == [("a", ReasonKind.DTYPE_INCOMPATIBLE)]


def test_now_nullable_is_breaking() -> None:
    check = validate_contract(contract(feat("a")), schema(feat("a", nullable=True)))
    assert check.status is ContractStatus.BREAKING_CHANGE
    assert kinds(check) == [("a", ReasonKind.NOW_NULLABLE)]
    assert check.reasons[0].breaking


def test_now_not_nullable_is_compatible() -> None:
    check = validate_contract(contract(feat("a", nullable=True)), schema(feat("a")))
    assert check.status is ContractStatus.COMPATIBLE_EXTENSION
    assert kinds(check) == [("a", ReasonKind.NOW_NOT_NULLABLE)]
    assert not check.reasons[0].breaking


def test_added_is_compatible() -> None:
    check = validate_contract(contract(feat("a")), schema(feat("a"), feat("z", "string")))
    assert check.status is ContractStatus.COMPATIBLE_EXTENSION
    assert kinds(check) == [("z", ReasonKind.ADDED)]
    assert not check.reasons[0].breaking


def test_every_reason_is_reported_at_once() -> None:
    c = contract(feat("gone"), feat("count", "int32"), feat("score", "float32"), feat("ok"))
    s = schema(
        feat("count", "int64"),
        feat("score", "float32", nullable=True),
        feat("ok"),
        feat("fresh", "bool"),
    )
    check = validate_contract(c, s)
    assert check.status is ContractStatus.BREAKING_CHANGE
    assert kinds(check) == [
        ("gone", ReasonKind.DROPPED),
        ("count", ReasonKind.DTYPE_NARROWED),
        ("score", ReasonKind.NOW_NULLABLE),
        ("fresh", ReasonKind.ADDED),
    ]
    assert [r.breaking for r in check.reasons] == [True, True, True, False]
    assert all(r.detail and "\n" not in r.detail for r in check.reasons)


def test_check_round_trips_through_json() -> None:
    check = validate_contract(contract(feat("a")), schema(feat("a", "int64")))
    assert ContractCheck.model_validate_json(check.model_dump_json()) == check


# ---------------------------------------------------------------------------- property laws

DTYPES = st.sampled_from(list(DType))
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
REFS = st.one_of(st.none(), st.sampled_from(["defs/a", "defs/b", "defs/c", "defs/d"]))


@st.composite
def features(draw: st.DrawFn, min_size: int = 0, max_size: int = 6) -> list[Feature]:
    names = draw(st.lists(NAMES, min_size=min_size, max_size=max_size, unique=True))
    return [
        Feature(name=n, dtype=draw(DTYPES), nullable=draw(st.booleans()), definition_ref=draw(REFS))
        for n in names
    ]


@st.composite
def contracts(draw: st.DrawFn, min_size: int = 0) -> FeatureContract:
    return FeatureContract(
        name=draw(NAMES),
        version=draw(st.integers(min_value=1, max_value=50)),
        features=draw(features(min_size=min_size)),
    )


@st.composite
def mutated_schema(draw: st.DrawFn, base: FeatureContract) -> FeatureSchema:
    """A schema derived from a contract by random drops, renames, type and null changes."""
    out: list[Feature] = []
    for f in base.features:
        action = draw(st.sampled_from(["keep", "drop", "dtype", "nullable", "rename"]))
        if action == "keep":
            out.append(f)
        elif action == "dtype":
            out.append(f.model_copy(update={"dtype": draw(DTYPES)}))
        elif action == "nullable":
            out.append(f.model_copy(update={"nullable": not f.nullable}))
        elif action == "rename":
            out.append(f.model_copy(update={"name": f.name + "_renamed"}))
    taken = {f.name for f in base.features} | {f.name for f in out}
    for extra in draw(features(max_size=3)):
        if extra.name not in taken:
            taken.add(extra.name)
            out.append(extra)
    order = draw(st.permutations(out))
    return FeatureSchema(version=draw(st.integers(min_value=1, max_value=50)), features=order)


def exact_schema(c: FeatureContract, version: int = 1) -> FeatureSchema:
    return FeatureSchema(version=version, features=list(c.features))


@given(contracts())
def test_law_identical_schema_is_ok(c: FeatureContract) -> None:
    check = validate_contract(c, exact_schema(c))
    assert check.status is ContractStatus.OK
    assert check.reasons == []


@given(st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_law_adding_an_unused_feature_never_breaks(data: st.DataObject) -> None:
    c = data.draw(contracts())
    s = data.draw(st.one_of(st.just(exact_schema(c)), mutated_schema(c)))
    used = {f.name for f in c.features} | {f.name for f in s.features}
    new = data.draw(features(min_size=1, max_size=1))[0]
    if new.name in used:
        new = new.model_copy(update={"name": new.name + "_new"})
    assert new.name not in used
    position = data.draw(st.integers(min_value=0, max_value=len(s.features)))
    extended = FeatureSchema(
        version=s.version, features=[*s.features[:position], new, *s.features[position:]]
    )
    before = validate_contract(c, s)
    after = validate_contract(c, extended)
    # a new feature can only turn a DROPPED into a RENAMED, which is breaking either way
    assert after.breaking == before.breaking
    if before.status is ContractStatus.OK:
        assert after.status is ContractStatus.COMPATIBLE_EXTENSION
        assert kinds(after) == [(new.name, ReasonKind.ADDED)]


@given(st.data())
def test_law_dropping_any_contract_feature_breaks(data: st.DataObject) -> None:
    c = data.draw(contracts(min_size=1))
    s = data.draw(st.one_of(st.just(exact_schema(c)), mutated_schema(c)))
    victim = data.draw(st.sampled_from(c.features)).name
    dropped = FeatureSchema(version=s.version, features=[f for f in s.features if f.name != victim])
    check = validate_contract(c, dropped)
    assert check.status is ContractStatus.BREAKING_CHANGE
    assert any(
        r.feature == victim and r.kind in (ReasonKind.DROPPED, ReasonKind.RENAMED)
        for r in check.reasons
    )


@given(contracts(min_size=1), st.data())
def test_law_dtype_change_breaks_iff_not_widening(c: FeatureContract, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(c.features))
    supplied = data.draw(DTYPES)
    s = FeatureSchema(
        version=1,
        features=[
            f.model_copy(update={"dtype": supplied}) if f.name == target.name else f
            for f in c.features
        ],
    )
    check = validate_contract(c, s)
    assert check.breaking == (not widens(supplied, target.dtype))
    if supplied == target.dtype:
        assert check.status is ContractStatus.OK
    else:
        assert len(check.reasons) == 1
        expected = (
            ReasonKind.DTYPE_WIDENED
            if widens(supplied, target.dtype)
            else ReasonKind.DTYPE_NARROWED
            if widens(target.dtype, supplied)
            else ReasonKind.DTYPE_INCOMPATIBLE
        )
        assert kinds(check) == [(target.name, expected)]


@given(DTYPES)
def test_law_widens_is_reflexive(t: DType) -> None:
    assert widens(t, t)


@given(DTYPES, DTYPES, DTYPES)
def test_law_widens_is_transitive(a: DType, b: DType, c: DType) -> None:
    if widens(a, b) and widens(b, c):
        assert widens(a, c)


@given(DTYPES, DTYPES)
def test_law_widens_is_antisymmetric(a: DType, b: DType) -> None:
    if a != b:
        assert not (widens(a, b) and widens(b, a))


def test_widens_is_transitive_exhaustively() -> None:
    for a in DType:
        for b in DType:
            for c in DType:
                if widens(a, b) and widens(b, c):
                    assert widens(a, c), (a, b, c)


@given(st.data())
def test_law_status_matches_reasons(data: st.DataObject) -> None:
    c = data.draw(contracts())
    s = data.draw(mutated_schema(c))
    check = validate_contract(c, s)
    assert (check.status is ContractStatus.BREAKING_CHANGE) == any(
        r.breaking for r in check.reasons
    )
    assert (check.status is ContractStatus.OK) == (not check.reasons)
    assert check.schema_version == s.version
    assert check.contract_ref == c.ref
    # every schema feature is accounted for at most once as ADDED
    added = [r.feature for r in check.reasons if r.kind is ReasonKind.ADDED]
    assert len(added) == len(set(added))
    assert set(added) <= {f.name for f in s.features} - {f.name for f in c.features}


# ---------------------------------------------------------------------------- FileSchemaSource


SCHEMA_V1 = schema(feat("a"), feat("b", "string", nullable=True), version=1)


def test_file_source_picks_highest_version_numerically(tmp_path: Path) -> None:
    for v in (1, 2, 10):
        write_schema(tmp_path, schema(feat("a"), feat(f"f{v}"), version=v))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "v3.yml").write_text("ignored: not the naming scheme")
    source = FileSchemaSource(tmp_path)
    assert isinstance(source, FeatureSchemaSource)
    assert source.versions() == [1, 2, 10]
    assert source.current_version() == 10
    current = source.current()
    assert current.version == 10
    assert [f.name for f in current.features] == ["a", "f10"]
    assert source.get(2).by_name().keys() == {"a", "f2"}


def test_file_source_current_version_follows_new_files(tmp_path: Path) -> None:
    write_schema(tmp_path, SCHEMA_V1)
    source = FileSchemaSource(tmp_path)
    assert source.current_version() == 1
    write_schema(tmp_path, SCHEMA_V1.model_copy(update={"version": 2}))
    assert source.current_version() == 2


def test_write_schema_round_trips(tmp_path: Path) -> None:
    original = schema(feat("a", "float16", ref="defs/a"), feat("b", "bytes", True), version=3)
    path = write_schema(tmp_path / "nested", original)
    assert path == tmp_path / "nested" / "v3.yaml"
    assert FileSchemaSource(tmp_path / "nested").get(3) == original
    assert [p.name for p in path.parent.iterdir()] == ["v3.yaml"]


def test_file_source_version_may_be_omitted_in_file(tmp_path: Path) -> None:
    (tmp_path / "v4.yaml").write_text("features:\n  - {name: a, dtype: int8}\n")
    assert FileSchemaSource(tmp_path).current() == schema(feat("a", "int8"), version=4)


def test_file_source_unknown_version(tmp_path: Path) -> None:
    write_schema(tmp_path, SCHEMA_V1)
    with pytest.raises(NotFoundError, match="version 5 not found.*available: 1"):
        FileSchemaSource(tmp_path).get(5)


def test_file_source_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SpecError) as info:
        FileSchemaSource(missing).current_version()
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_file_source_no_schema_files(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(SpecError) as info:
        FileSchemaSource(tmp_path).current()
    assert str(tmp_path) in str(info.value)
    assert "v1.yaml" in str(info.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_source_bad_dtype_names_file_field_and_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "v2.yaml",
        "features:\n  - name: a\n    dtype: int32\n  - name: b\n    dtype: int128\n",
    )
    with pytest.raises(SpecError) as info:
        FileSchemaSource(tmp_path).current()
    message = str(info.value)
    assert message.startswith(f"{path}: features[1].dtype: 'int128'")
    assert "allowed: bool, int8, int16" in message
    assert "timestamp" in message
    assert "\n" not in message


def test_file_source_missing_field(tmp_path: Path) -> None:
    path = write(tmp_path / "v1.yaml", "features:\n  - name: a\n")
    with pytest.raises(SpecError) as info:
        FileSchemaSource(tmp_path).current()
    assert str(info.value) == f"{path}: features[0].dtype: required field missing"


def test_file_source_bad_name_and_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path / "v1.yaml", "features:\n  - {name: 'a b', dtype: bool}\n")
    with pytest.raises(SpecError, match=r"v1\.yaml: features\[0\]\.name: 'a b' is not a valid"):
        FileSchemaSource(tmp_path).current()
    write(path, "features:\n  - {name: a, dtype: bool}\n  - {name: a, dtype: int8}\n")
    with pytest.raises(SpecError, match=r"v1\.yaml: features: duplicate feature names 'a'"):
        FileSchemaSource(tmp_path).current()


def test_file_source_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "v1.yaml", "features:\n  - name: a\n    dtype: [int8\n  - x: :\n")
    with pytest.raises(SpecError) as info:
        FileSchemaSource(tmp_path).current()
    assert str(info.value).startswith(f"{path}: invalid YAML at line ")


def test_file_source_version_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path / "v2.yaml", "version: 3\nfeatures: []\n")
    with pytest.raises(SpecError) as info:
        FileSchemaSource(tmp_path).current()
    assert str(path) in str(info.value)
    assert "version" in str(info.value)


def test_file_source_features_must_be_a_list(tmp_path: Path) -> None:
    path = write(tmp_path / "v1.yaml", "features: {a: int8}\n")
    with pytest.raises(SpecError) as info:
        FileSchemaSource(tmp_path).current()
    assert str(info.value) == f"{path}: features: expected a list, got mapping"


def test_validation_against_file_source(tmp_path: Path) -> None:
    write_schema(tmp_path, schema(feat("a", "int16"), feat("b"), version=1))
    source = FileSchemaSource(tmp_path)
    check = validate_contract(contract(feat("a", "int32")), source.current())
    assert check.schema_version == source.current_version() == 1
    assert kinds(check) == [("a", ReasonKind.DTYPE_WIDENED), ("b", ReasonKind.ADDED)]


# ---------------------------------------------------------------------------- contract files


def test_load_contract_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "churn.yaml",
        "name: churn\nversion: 2\nfeatures:\n"
        "  - {name: age, dtype: int16, definition_ref: defs/age}\n"
        "  - {name: plan, dtype: string, nullable: true}\n",
    )
    loaded = load_contract_file(path)
    assert loaded.ref == "churn@2"
    assert loaded.features[0] == feat("age", "int16", ref="defs/age")
    assert loaded.features[1].nullable


def test_load_contract_file_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "name: churn\nversion: 0\nfeatures: []\n")
    with pytest.raises(SpecError) as info:
        load_contract_file(path)
    assert str(info.value) == f"{path}: version: 0 is out of range; allowed: >= 1"

    write(path, "name: churn\nversion: 1\nfeatures: []\nowner: me\n")
    with pytest.raises(SpecError) as info:
        load_contract_file(path)
    assert (
        str(info.value) == f"{path}: owner: unknown field; allowed fields: name, version, features"
    )

    with pytest.raises(SpecError, match="file not found"):
        load_contract_file(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------- yamlio


class Color(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    shade: DType
    alpha: int = pydantic.Field(default=1, ge=0)


class Palette(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    title: str
    colors: list[Color] = []
    accent: Color | None = None


def test_yamlio_enum_error_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "title: t\ncolors:\n  - shade: int8\n  - shade: purple\n")
    with pytest.raises(SpecError) as info:
        load_yaml_model(path, Palette)
    allowed = ", ".join(d.value for d in DType)
    assert str(info.value) == (
        f"{path}: colors[1].shade: 'purple' is not one of the allowed values; allowed: {allowed}"
    )


def test_yamlio_unknown_field_lists_allowed_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "title: t\ncolour: red\n")
    with pytest.raises(SpecError) as info:
        load_yaml_model(path, Palette)
    assert str(info.value) == (
        f"{path}: colour: unknown field; allowed fields: title, colors, accent"
    )
    write(path, "title: t\naccent: {shade: bool, hue: 3}\n")
    with pytest.raises(SpecError) as info:
        load_yaml_model(path, Palette)
    assert str(info.value) == f"{path}: accent.hue: unknown field; allowed fields: shade, alpha"


def test_yamlio_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "title: t\ncolors:\n  - shade: bool\n   bad: [\n")
    with pytest.raises(SpecError) as info:
        load_yaml_model(path, Palette)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML at line 4")
    assert "\n" not in message


def test_yamlio_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "- a\n- b\n")
    with pytest.raises(SpecError, match="top level is a list; expected a mapping"):
        load_yaml_model(path, Palette)
    write(path, "")
    with pytest.raises(SpecError, match="empty document"):
        read_yaml_mapping(path)


def test_yamlio_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_yaml_model(tmp_path / "absent.yaml", Palette)
    with pytest.raises(SpecError, match="is a directory"):
        load_yaml_model(tmp_path, Palette)


def test_yamlio_counts_further_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "colors:\n  - shade: x\n  - alpha: -1\n")
    with pytest.raises(SpecError) as info:
        load_yaml_model(path, Palette)
    message = str(info.value)
    assert message.startswith(f"{path}: title: required field missing")
    assert message.endswith("(+3 more)")


def test_format_validation_error_without_model_class() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Palette.model_validate({"title": "t", "accent": {"shade": "nope"}, "x": 1})
    message = format_validation_error("inline", info.value)
    assert message.startswith("inline: accent.shade: 'nope' is not one of the allowed values")
    assert "allowed: bool, int8" in message
    assert "timestamp" in message
    assert message.endswith("(+1 more)")
    assert "\n" not in message
