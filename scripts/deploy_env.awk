# Reads the deployment variables named in `names` from a .env file and prints them as make text for
# deploy.mk to $(eval): each value only when make has no value of its own (command line, environment).
# Lines are joined with @NL@, because make's $(shell) turns newlines into spaces.
# Understands `export NAME=value`, quoted values and trailing comments; empty values are skipped.
# A value is text, never make syntax: $ becomes $$, and # and @ (which would start a comment or an
# @NL@) become references to deploy.mk's env_hash and env_at; env_edge (empty) on both sides keeps
# leading spaces and stops a trailing backslash from joining the next line.
BEGIN {
    count = split(names, list, " ")
    for (i = 1; i <= count; i++) wanted[list[i]] = 1
}
{
    line = $0
    sub(/^[ \t]*export[ \t]+/, "", line)
    if (!match(line, /^[A-Za-z_][A-Za-z0-9_]*[ \t]*=/)) next
    name = substr(line, 1, RLENGTH)
    sub(/[ \t]*=$/, "", name)
    if (!(name in wanted)) next
    value = substr(line, RLENGTH + 1)
    sub(/^[ \t]+/, "", value)
    quote = substr(value, 1, 1)
    if (quote == "\"" || quote == "'") {
        value = substr(value, 2)
        end = index(value, quote)
        if (end) value = substr(value, 1, end - 1)
    } else {
        sub(/[ \t]+#.*$/, "", value)
        sub(/[ \t]+$/, "", value)
    }
    values[name] = value
}
END {
    for (name in values) {
        value = values[name]
        if (value == "") continue
        gsub(/\$/, "$$", value)
        gsub(/#/, "$(env_hash)", value)
        gsub(/@/, "$(env_at)", value)
        printf "ifeq ($(origin %s),undefined)@NL@%s := $(env_edge)%s$(env_edge)@NL@endif@NL@", name, name, value
    }
}
