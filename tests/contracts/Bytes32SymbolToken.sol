// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Erc20Core} from "./Erc20Core.sol";

/// @notice An ERC-20 whose name() and symbol() answer bytes32 (right-padded with zero bytes),
/// as early tokens such as MKR do, instead of ABI-encoded strings.
contract Bytes32SymbolToken is Erc20Core {
    bytes32 public immutable name;
    bytes32 public immutable symbol;

    constructor(bytes32 name_, bytes32 symbol_, uint8 decimals_) Erc20Core(decimals_) {
        name = name_;
        symbol = symbol_;
    }
}
