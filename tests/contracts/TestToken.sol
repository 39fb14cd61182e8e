// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Erc20Core} from "./Erc20Core.sol";

/// @notice An ERC-20 whose name and symbol are strings, as the standard says.
contract TestToken is Erc20Core {
    string public name;
    string public symbol;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) Erc20Core(decimals_) {
        name = name_;
        symbol = symbol_;
    }
}
