# bash completion for pidlock(1): the subcommands, their options and option values, the lock
# file, and after FILE (and --) the command with its own completion.  -*- shell-script -*-
#
# Installed as /usr/share/bash-completion/completions/pidlock, where bash-completion loads it the
# first time `pidlock` is completed (and `pidlock-fleet`, through a link of that name). Options
# come before FILE; everything after FILE is the command's.

# The index in COMP_WORDS of the word that starts where words[$1] starts. _init_completion joins
# what COMP_WORDBREAKS split (a URL's ':', an option's '='); _command_offset counts in COMP_WORDS.
_pidlock_comp_words_index() {
    local target=$1 pos=0 i start=-1
    for ((i = 0; i <= target && i < ${#words[@]}; i++)); do
        while [[ ${COMP_LINE:pos} != "${words[i]}"* ]] && ((pos < ${#COMP_LINE})); do ((pos++)); done
        ((i == target)) && start=$pos
        ((pos += ${#words[i]}))
    done
    pos=0
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        while [[ ${COMP_LINE:pos} != "${COMP_WORDS[i]}"* ]] && ((pos < ${#COMP_LINE})); do ((pos++)); done
        if ((pos == start)); then
            echo "$i"
            return
        fi
        ((pos += ${#COMP_WORDS[i]}))
    done
    echo "$COMP_CWORD"
}

_pidlock() {
    local cur prev words cword split
    _init_completion -s -n : || return

    # The subcommand: the first word that is not a global option.
    local i sub="" subi=0
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -*) ;;
            *)
                sub=${words[i]}
                subi=$i
                break
                ;;
        esac
    done
    if [[ -z $sub ]]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W '--help --version' -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W 'run status' -- "$cur")
        fi
        return
    fi

    local with_value without_value
    local fleet_with_value='--etcd --slots --prefix --cacert --cert --key --user --password-file'
    local fleet_without_value='--fleet --insecure-skip-verify'
    case $sub in
        run)
            with_value="-w --wait --timeout -E --conflict-exit-code --role --ttl --on-lease-loss
                        --kill-after $fleet_with_value"
            without_value="-n --nonblock -s --shared --defer-to-writers -x -e --exclusive -o
                           --close --exec --no-mkdir --help $fleet_without_value"
            ;;
        status)
            with_value=$fleet_with_value
            without_value="--json --help $fleet_without_value"
            ;;
        *) return ;;
    esac
    with_value=" ${with_value//[[:space:]]/ } "
    without_value=${without_value//[[:space:]]/ }

    # As pidlock reads its command line: options (with their values) up to FILE, "--" ending
    # them early; after FILE, an optional "--", then the command, verbatim.
    local file=0 command=0 end_of_options=0 word j
    for ((i = subi + 1; i < cword; i++)); do
        word=${words[i]}
        if ((file)); then
            [[ $word == -- ]] && command=$((i + 1)) || command=$i
            break
        fi
        if ((end_of_options)) || [[ $word != -?* ]]; then
            file=$i
            continue
        fi
        case $word in
            --) end_of_options=1 ;;
            --*=*) ;;
            --*) [[ $with_value == *" $word "* ]] && ((i++)) ;;
            *) # short options, maybe clustered (-no, -w5): the first that takes a value ends it
                for ((j = 1; j < ${#word}; j++)); do
                    if [[ $with_value == *" -${word:j:1} "* ]]; then
                        ((j == ${#word} - 1)) && ((i++))
                        break
                    fi
                done
                ;;
        esac
    done

    if ((i > cword)) || [[ $split == true ]]; then
        # An option's value: files for the certificates and the password; seconds, codes, names
        # and URLs are the user's.
        case $prev in
            --on-lease-loss) mapfile -t COMPREPLY < <(compgen -W 'terminate warn' -- "$cur") ;;
            --cacert | --cert | --key | --password-file) _filedir ;;
        esac
        return
    fi
    if [[ $sub == run ]] && ((file && !command)); then
        # Right after FILE: the customary separator, or the command itself.
        if [[ $cur == - || $cur == -- ]]; then
            COMPREPLY=(--)
            return
        fi
        command=$cword
    fi
    if ((command)); then
        [[ $sub == run ]] || return
        _command_offset "$(_pidlock_comp_words_index "$command")"
        return
    fi
    ((file)) && return # status takes nothing after FILE

    if [[ $cur == -* ]] && ((!end_of_options)); then
        mapfile -t COMPREPLY < <(compgen -W "$with_value $without_value" -- "$cur")
        return
    fi
    _filedir
    __ltrim_colon_completions "$cur"
} &&
    complete -F _pidlock pidlock pidlock-fleet

# ex: filetype=sh
